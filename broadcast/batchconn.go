package broadcast

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// coder/websocket flushes every frame to the socket: one write(2) per
// message. When a connection has a backlog, walcast wants the whole batch
// in one write. batchConn sits under the library (installed through the
// Hijacker it calls) and, between begin and end, collects what the library
// flushes into one buffer that end writes at once. Outside a batch it
// passes writes straight through, so pings, pongs and close frames from
// the library's other paths go out as before.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	batching bool
	buf      *[]byte
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.batching {
		*c.buf = append(*c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// begin starts collecting writes.
func (c *batchConn) begin() {
	c.mu.Lock()
	c.batching = true
	if c.buf == nil {
		c.buf = batchBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// end writes what was collected in one write and stops collecting. The
// lock is held through the write so that no pass-through write can
// overtake the batch.
func (c *batchConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	b := c.buf
	c.buf = nil
	if b == nil {
		return nil
	}
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	if cap(*b) <= 256<<10 { // do not keep a huge batch's buffer around
		*b = (*b)[:0]
		batchBufs.Put(b)
	}
	return err
}

// batchingWriter is the http.ResponseWriter handed to websocket.Accept: its
// Hijack wraps the connection in a batchConn and gives the library small
// buffers, since batching happens below them (idle connections then hold
// 1 KiB of buffers instead of net/http's 8 KiB).
type batchingWriter struct {
	http.ResponseWriter
	conn *batchConn
}

const (
	readBufSize  = 1 << 10 // client frames are small; larger ones just take more reads
	writeBufSize = 512     // flushes into the batch buffer, or straight out between batches
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
	w.conn = &batchConn{Conn: nc}
	r := brw.Reader
	// Bytes the client sent after its handshake may already sit in
	// net/http's reader: move them into the small one, or keep the big one
	// if they do not fit.
	if n := r.Buffered(); n <= readBufSize {
		pending, _ := r.Peek(n)
		small := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(pending)), w.conn), readBufSize)
		if n > 0 {
			if _, err := small.Peek(n); err != nil {
				nc.Close()
				return nil, nil, err
			}
		}
		r = small
	}
	return w.conn, bufio.NewReadWriter(r, bufio.NewWriterSize(w.conn, writeBufSize)), nil
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *batchingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
