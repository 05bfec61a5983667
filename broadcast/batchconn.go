package broadcast

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// batchConn sits under coder/websocket (installed through the Hijacker it
// calls). Walcast writes its own frames to it, already framed (see
// appendFrame), in one write per delivery; the library writes only what
// it answers and sends on its own: pongs, pings and close frames. mu
// keeps the two from interleaving mid-frame, and once a close frame went
// out (closed) nothing follows it, as RFC 6455 requires.
type batchConn struct {
	net.Conn
	// raw writes without waiting (see rawWrite); nil when the connection
	// offers no file descriptor, and every write then waits.
	raw syscall.RawConn

	mu     sync.Mutex
	framed bool // the handshake is done: every library write is one frame
	closed bool // a close frame was written
	// The arguments and results of rawWrite, under mu: a method value
	// made once, so a write allocates no closure.
	wb    []byte
	wn    int
	werr  error
	rawFn func(fd uintptr) bool
}

// newBatchConn wraps a hijacked connection.
func newBatchConn(nc net.Conn) *batchConn {
	c := &batchConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok && canWriteRaw {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
			c.rawFn = c.rawWrite
		}
	}
	return c
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// Write is the library's path: the handshake, then control frames.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.framed && len(p) > 0 && p[0] == 0x88 { // FIN and the close opcode
		c.closed = true
	}
	return c.Conn.Write(p)
}

// startFraming notes that the handshake is written: from now on every
// write of the library starts a frame.
func (c *batchConn) startFraming() {
	c.mu.Lock()
	c.framed = true
	c.mu.Unlock()
}

// writeAll writes b, waiting as long as the socket makes it.
func (c *batchConn) writeAll(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil // nothing may follow a close frame: dropped
	}
	_, err := c.Conn.Write(b)
	return err
}

// tryWrite writes what of b the socket takes now, without waiting: n is
// how much. Without a raw connection it writes nothing, and the caller's
// slow path writes it all, waiting. When the socket took part of b, the
// write may have stopped inside a frame: tryWrite then returns held, with
// the lock still held so that no frame of the library's (a pong, a close)
// lands inside ours, and the caller must finish with writeHeld.
func (c *batchConn) tryWrite(b []byte) (n int, held bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return len(b), false, nil // nothing may follow a close frame: dropped
	}
	if c.raw == nil {
		c.mu.Unlock()
		return 0, false, nil
	}
	c.wb, c.wn, c.werr = b, 0, nil
	if err = c.raw.Write(c.rawFn); err == nil {
		n, err = c.wn, c.werr
	}
	c.wb, c.werr = nil, nil
	if err == nil && n > 0 && n < len(b) {
		return n, true, nil
	}
	c.mu.Unlock()
	return n, false, err
}

// writeHeld writes the rest of a write tryWrite left held, waiting, and
// releases the lock.
func (c *batchConn) writeHeld(rest []byte) error {
	defer c.mu.Unlock()
	_, err := c.Conn.Write(rest)
	return err
}

// batchingWriter is the http.ResponseWriter handed to websocket.Accept: its
// Hijack wraps the connection in a batchConn and gives the library small
// buffers, since walcast frames its messages itself (idle connections then hold
// 640 bytes of buffers instead of net/http's 8 KiB).
type batchingWriter struct {
	http.ResponseWriter
	conn *batchConn
}

const (
	readBufSize = 512 // client frames are small; larger ones just take more reads
	// The library writes only the handshake, then control frames: at most
	// 127 bytes (a 2-byte header, 125 of payload), so each fits the buffer
	// and reaches batchConn in one Write, whole (batchConn.Write relies on
	// it).
	writeBufSize = 128
)

func (w *batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The deadlines of the server's ReadTimeout and WriteTimeout must not
	// outlive the handshake, or every WebSocket would be cut when they
	// pass; the WebSocket library sets none of its own. net/http clears
	// them when it hijacks (Go 1.26); clearing them here keeps that true
	// whatever serves us (TestWebSocketOutlivesHTTPTimeouts checks it).
	// The session's liveness is bounded by pings and the write watchdog.
	if err := nc.SetDeadline(time.Time{}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	w.conn = newBatchConn(nc)
	r := brw.Reader
	// Bytes the client sent after its handshake may already sit in
	// net/http's reader: move them into the small one, or keep the big one
	// if they do not fit.
	switch n := r.Buffered(); {
	case n == 0: // the usual case: the client waits for the 101
		r = bufio.NewReaderSize(w.conn, readBufSize)
	case n <= readBufSize:
		pending, _ := r.Peek(n)
		small := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), w.conn), readBufSize)
		if _, err := small.Peek(n); err != nil {
			nc.Close()
			return nil, nil, err
		}
		r = small
	}
	return w.conn, bufio.NewReadWriter(r, bufio.NewWriterSize(w.conn, writeBufSize)), nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *batchingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
