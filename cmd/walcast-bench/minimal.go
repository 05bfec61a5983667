package main

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The minimal broadcast server is the fan-out baseline: no database, no
// bus, no auth, no scoping. Each published message is encoded once, as a
// whole WebSocket frame, and the same bytes are queued to every
// connection, whose own goroutine writes everything queued with one
// writev; a connection whose queue is full is closed with 4008, as walcast
// does. It is what this machine can fan out, and runs
// as a child (walcast-bench minimal-server) so that it has its own
// open-file limit and its own CPU and memory figures.

// minimalServer holds the connections.
type minimalServer struct {
	rowSize int

	mu    sync.RWMutex
	conns map[*minimalConn]struct{}

	published atomic.Int64
	delivered atomic.Int64
	running   atomic.Bool
}

type minimalConn struct {
	conn    net.Conn
	ch      chan []byte // whole pre-encoded WebSocket frames
	closing atomic.Bool
}

func runMinimalServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("walcast-bench minimal-server", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address")
	rowSize := fs.Int("row-size", 32, "notes bytes per message")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil || !loopback(host) {
		return fmt.Errorf("--listen %q: want a loopback host:port", *listen)
	}
	s := &minimalServer{rowSize: max(*rowSize, 20), conns: map[*minimalConn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		n := len(s.conns)
		s.mu.RUnlock()
		fmt.Fprintf(w, "walcast_changes_total %d\nwalcast_deliveries_total %d\nwalcast_clients %d\n",
			s.published.Load(), s.delivered.Load(), n)
	})
	mux.HandleFunc("POST /start", s.start)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serveWS does the WebSocket handshake itself (RFC 6455 §4.2.2), so that
// it owns the socket: queued frames are written with one writev. Client
// frames are read and dropped; the bench's clients send none but close.
func (s *minimalServer) serveWS(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "want a WebSocket upgrade", http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	hello := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n"
	out := append([]byte(hello), wsFrame([]byte(`{"type":"welcome","position":"0-0"}`))...)
	if _, err := conn.Write(out); err != nil {
		return
	}
	mc := &minimalConn{conn: conn, ch: make(chan []byte, 1024)}
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, conn)
		close(gone)
	}()
	s.mu.Lock()
	s.conns[mc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, mc)
		s.mu.Unlock()
	}()
	bufs := make([][]byte, 0, 64)
	for {
		select {
		case f := <-mc.ch:
			bufs = append(bufs[:0], f)
		more:
			for len(bufs) < cap(bufs) {
				select {
				case f := <-mc.ch:
					bufs = append(bufs, f)
				default:
					break more
				}
			}
			if mc.closing.Load() {
				_, _ = conn.Write([]byte{0x88, 2, 4008 >> 8, 4008 & 0xff})
				return
			}
			nb := net.Buffers(bufs)
			if _, err := nb.WriteTo(conn); err != nil {
				return
			}
			s.delivered.Add(int64(len(bufs)))
		case <-gone:
			return
		}
	}
}

// wsFrame returns payload as one unmasked server-to-client text frame.
func wsFrame(payload []byte) []byte {
	n := len(payload)
	var h []byte
	switch {
	case n < 126:
		h = []byte{0x81, byte(n)}
	case n < 1<<16:
		h = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		h = []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(h, payload...)
}

// start publishes rate messages/s for the given seconds, in the background.
func (s *minimalServer) start(w http.ResponseWriter, r *http.Request) {
	rate, err1 := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
	secs, err2 := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err1 != nil || err2 != nil || rate <= 0 || secs <= 0 || secs > 7200 {
		http.Error(w, "want rate>0 and 0<seconds<=7200", http.StatusBadRequest)
		return
	}
	if !s.running.CompareAndSwap(false, true) {
		http.Error(w, "already publishing", http.StatusConflict)
		return
	}
	go s.publish(rate, time.Duration(secs*float64(time.Second)))
	io.WriteString(w, "started\n")
}

func (s *minimalServer) publish(rate float64, d time.Duration) {
	defer s.running.Store(false)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	end := start.Add(d)
	buf := make([]byte, 0, 512+s.rowSize)
	for k := int64(0); ; k++ {
		next := start.Add(time.Duration(k) * interval)
		if next.After(end) {
			return
		}
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		// Encoded once, shared by every connection.
		buf = sampleFrame(buf[:0], k+1, time.Now(), s.rowSize)
		frame := wsFrame(buf)
		s.mu.RLock()
		for mc := range s.conns {
			select {
			case mc.ch <- frame:
			default:
				// Full queue: too slow; its goroutine closes it with
				// 4008, as walcast does.
				mc.closing.Store(true)
			}
		}
		s.mu.RUnlock()
		s.published.Add(1)
	}
}

// sampleFrame appends a message shaped like walcast's guarantee_update for
// an INSERT, whose notes start with the send time.
func sampleFrame(b []byte, seq int64, now time.Time, rowSize int) []byte {
	ts := now.UTC().Format("2006-01-02T15:04:05.000000Z")
	b = append(b, `{"id":"`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `-0","type":"guarantee_update","action":"created","table":"public.guarantee","data":{"id":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"committee_id":1,"user_id":1,"elector_id":null,"elector_name":"bench","status":"medium","notes":"`...)
	n0 := len(b)
	b = strconv.AppendInt(b, now.UnixNano(), 10)
	b = append(b, ':')
	for len(b)-n0 < rowSize {
		b = append(b, 'x')
	}
	b = append(b, `","created_at":"`...)
	b = append(b, ts...)
	b = append(b, `","updated_at":"`...)
	b = append(b, ts...)
	b = append(b, `"},"version":"`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `","timestamp":"`...)
	b = append(b, ts...)
	return append(b, `"}`...)
}
