package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walcast/walcast/broadcast"
)

// histShards spreads the clients' latency records over several histograms,
// so that thousands of goroutines do not all add to the same counters.
const histShards = 8

// maxResumes bounds how often one client reconnects after being closed as
// too slow (4008) in one run.
const maxResumes = 5

// client is one WebSocket connection that reads every frame. Its counters
// are written by its own goroutine only and read by the reporter.
type client struct {
	i      int
	url    string // ws://…/ws?token=…
	conn   net.Conn
	br     *bufio.Reader
	frames atomic.Int64 // change frames (those carrying a send time)
	last   atomic.Int64 // unix nanoseconds of the last change frame
	lastID []byte       // id of the last change frame, for resuming

	resumes int
	err     error // why the client stopped early, if it did
}

// clientPool is the set of clients of one run.
type clientPool struct {
	clients []*client
	hists   [histShards]hist
	// split is client 0's latency cut at the commit: see splitHist.
	split   splitHist
	wg      sync.WaitGroup
	stopped atomic.Int64 // clients that ended with an error
	resumed atomic.Int64
}

// tokenFor mints client i's token: admin scope sees everything; committee
// scope is a supervisor of committee i % committees + 1. Every client has
// its own user id, so per-user connection caps do not apply.
func tokenFor(secret []byte, i int, scope string, committees int) (string, error) {
	user := int64(1_000_000 + i)
	if scope == "committee" {
		return broadcast.MintToken(secret, user, "supervisor", []int64{int64(i%committees + 1)}, 3*time.Hour)
	}
	return broadcast.MintToken(secret, user, "admin", nil, 3*time.Hour)
}

// connect opens n clients against base (ws://host:port), each having read
// its welcome frame, with a bounded number of dials in flight. It gives up
// after limit.
func (p *clientPool) connect(ctx context.Context, base string, n int, token func(i int) (string, error), limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	p.clients = make([]*client, n)
	for i := range p.clients {
		tok, err := token(i)
		if err != nil {
			return fmt.Errorf("mint token: %w", err)
		}
		p.clients[i] = &client{i: i, url: base + "/ws?token=" + tok}
	}
	const inFlight = 64
	next := atomic.Int64{}
	errs := make(chan error, inFlight)
	var wg sync.WaitGroup
	for range min(inFlight, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := p.clients[i].dial(ctx, ""); err != nil {
					errs <- fmt.Errorf("client %d of %d: %w", i+1, n, err)
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		p.closeAll()
		return err
	}
	return nil
}

// dial connects (resuming after since when not empty) and reads the
// welcome frame. A refused upgrade (429, 503) is retried with backoff.
func (c *client) dial(ctx context.Context, since string) error {
	u := c.url
	if since != "" {
		u += "&since=" + since
	}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		status, err := c.handshake(ctx, u)
		if err == nil {
			return nil
		}
		retry := status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
		if !retry || attempt == 10 || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// handshake opens the TCP connection, upgrades it (RFC 6455 §4.1) and
// reads the welcome frame, all within 15 s. The client speaks WebSocket
// itself, reading frames from a small buffered reader, because 19,000 of
// them share two cores with the server they measure.
func (c *client) handshake(ctx context.Context, rawURL string) (status int, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", u.Host)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	deadline, _ := dctx.Deadline()
	conn.SetDeadline(deadline)
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, fmt.Errorf("send upgrade: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("read upgrade response: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp.StatusCode, fmt.Errorf("upgrade refused: HTTP %d", resp.StatusCode)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return 0, errors.New("upgrade: bad Sec-WebSocket-Accept")
	}
	c.conn, c.br = conn, br
	buf := make([]byte, 512)
	if _, err := c.readMessage(&buf); err != nil {
		return 0, fmt.Errorf("read welcome: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return resp.StatusCode, nil
}

// closeError is a close frame from the server.
type closeError struct{ code int }

func (e *closeError) Error() string { return fmt.Sprintf("closed by the server with %d", e.code) }

// readMessage reads one data message into *buf (growing it, up to 1 MiB),
// assembling fragments and answering pings on the way.
func (c *client) readMessage(buf *[]byte) (int, error) {
	n := 0
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return 0, err
		}
		fin, op, size := hdr[0]&0x80 != 0, hdr[0]&0x0f, int64(hdr[1]&0x7f)
		if hdr[1]&0x80 != 0 {
			return 0, errors.New("server sent a masked frame")
		}
		switch size {
		case 126:
			if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
				return 0, err
			}
			size = int64(binary.BigEndian.Uint16(hdr[:2]))
		case 127:
			if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
				return 0, err
			}
			size = int64(binary.BigEndian.Uint64(hdr[:8]))
		}
		if size > 1<<20 || int64(n)+size > 1<<20 {
			return 0, fmt.Errorf("frame of %d bytes is larger than 1 MiB", size)
		}
		if op >= 8 { // control frame: ping, pong, close
			if size > 125 {
				return 0, errors.New("control frame longer than 125 bytes")
			}
			var ctl [125]byte
			p := ctl[:size]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return 0, err
			}
			switch op {
			case 8:
				code := 1005
				if len(p) >= 2 {
					code = int(binary.BigEndian.Uint16(p))
				}
				return 0, &closeError{code}
			case 9: // ping: answer with a masked pong (zero mask key)
				pong := append([]byte{0x8A, 0x80 | byte(len(p)), 0, 0, 0, 0}, p...)
				if _, err := c.conn.Write(pong); err != nil {
					return 0, err
				}
			}
			continue
		}
		if need := n + int(size); need > len(*buf) {
			*buf = append((*buf)[:n], make([]byte, need-n)...)
		}
		if _, err := io.ReadFull(c.br, (*buf)[n:n+int(size)]); err != nil {
			return 0, err
		}
		n += int(size)
		if fin {
			return n, nil
		}
	}
}

// start runs every client's read loop until ctx ends.
func (p *clientPool) start(ctx context.Context) {
	for _, c := range p.clients {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var split *splitHist
			if c.i == 0 {
				split = &p.split
			}
			c.err = c.readLoop(ctx, &p.hists[c.i%histShards], split)
			if c.err != nil && ctx.Err() == nil {
				p.stopped.Add(1)
			}
			p.resumed.Add(int64(c.resumes))
		}()
	}
}

var (
	notesKey = []byte(`"notes":"`)
	idKey    = []byte(`{"id":"`)
)

// readLoop reads messages into one reused buffer and, for each change
// frame, records now minus the send time the writer put at the start of
// notes, and in split (when not nil) that time cut at the frame's commit
// time. It does not decode JSON: it finds the fields it needs.
func (c *client) readLoop(ctx context.Context, h *hist, split *splitHist) error {
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer func() { stop() }()
	buf := make([]byte, 2048)
	for {
		n, err := c.readMessage(&buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ce *closeError
			if errors.As(err, &ce) && ce.code == 4008 && c.resumes < maxResumes {
				// Too slow: resume from the last id, as client.js does.
				c.resumes++
				stop()
				c.conn.Close()
				if err := c.dial(ctx, string(c.lastID)); err != nil {
					return fmt.Errorf("resume: %w", err)
				}
				stop = context.AfterFunc(ctx, func() { c.conn.Close() })
				continue
			}
			return err
		}
		now := time.Now().UnixNano()
		frame := buf[:n]
		sent, ok := sentAt(frame)
		if !ok {
			continue // a control message
		}
		h.Record(time.Duration(now - sent))
		if split != nil {
			split.record(frame, sent, now)
		}
		c.frames.Add(1)
		c.last.Store(now)
		if bytes.HasPrefix(frame, idKey) {
			if end := bytes.IndexByte(frame[len(idKey):], '"'); end >= 0 {
				c.lastID = append(c.lastID[:0], frame[len(idKey):len(idKey)+end]...)
			}
		}
	}
}

// sentAt finds the writer's send time: "notes":"<unix nanos>:…".
func sentAt(frame []byte) (int64, bool) {
	i := bytes.Index(frame, notesKey)
	if i < 0 {
		return 0, false
	}
	rest := frame[i+len(notesKey):]
	end := bytes.IndexByte(rest, ':')
	if end <= 0 || end > 19 {
		return 0, false
	}
	var v int64
	for _, d := range rest[:end] {
		if d < '0' || d > '9' {
			return 0, false
		}
		v = v*10 + int64(d-'0')
	}
	return v, true
}

// deliveries sums the clients' change frames; last is the latest arrival.
func (p *clientPool) deliveries() (n int64, last time.Time) {
	var l int64
	for _, c := range p.clients {
		n += c.frames.Load()
		if t := c.last.Load(); t > l {
			l = t
		}
	}
	if l > 0 {
		last = time.Unix(0, l)
	}
	return n, last
}

// latency merges the shards.
func (p *clientPool) latency() *hist {
	h := &hist{}
	for i := range p.hists {
		h.Merge(&p.hists[i])
	}
	return h
}

// closeAll closes every connection and waits for the read loops.
func (p *clientPool) closeAll() {
	for _, c := range p.clients {
		if c != nil && c.conn != nil {
			c.conn.Close()
		}
	}
	p.wg.Wait()
}

// splitHist is one client's latency cut at the commit, from the frame's
// "timestamp" (walcast: the transaction's commit time, which PostgreSQL
// takes as it commits; the minimal server: the time it publishes): what
// the writer's INSERT and commit took, and what followed until the client
// read the frame (capture, bus and fan-out for walcast). One client's
// frames are enough for the percentiles of a change's path, and parsing a
// time per frame of every client would cost the clients' CPU.
type splitHist struct {
	toCommit, fromCommit hist
}

var timestampKey = []byte(`"timestamp":"`)

// record adds a frame sent (writer's clock) at sent and read at now.
func (s *splitHist) record(frame []byte, sent, now int64) {
	at, ok := commitAt(frame)
	if !ok {
		return
	}
	s.toCommit.Record(time.Duration(max(0, at-sent)))
	s.fromCommit.Record(time.Duration(max(0, now-at)))
}

// commitAt finds the frame's timestamp, the last "timestamp" field (a
// row's own columns come before it), in unix nanoseconds.
func commitAt(frame []byte) (int64, bool) {
	i := bytes.LastIndex(frame, timestampKey)
	if i < 0 {
		return 0, false
	}
	rest := frame[i+len(timestampKey):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:end]))
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}
