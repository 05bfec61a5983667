package testenv_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// echoServer answers every line with the same line until the client
// closes; it records whether each connection saw its client go away.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	ended  int // connections whose client closed or reset them
	active []net.Conn
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.active = append(s.active, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				_, _ = io.Copy(c, c)
				s.mu.Lock()
				s.ended++
				s.mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.active {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) endedConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// mustEcho fails t unless line comes back within a generous 5 s.
func mustEcho(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if err := roundTrip(c, r, line, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// roundTrip sends a line and reads it back, or returns the error.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echo mismatch: " + got)
	}
	return nil
}

func dialProxy(t *testing.T, p *testenv.Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestProxyForwardsAndSilences(t *testing.T) {
	echo := startEcho(t)
	p := testenv.StartProxy(t, echo.ln.Addr().String())
	a, ra := dialProxy(t, p)
	if err := roundTrip(a, ra, "hello", 5*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if n := p.Silence(); n != 1 {
		t.Fatalf("silenced %d connections, want 1", n)
	}
	// The silenced connection neither answers nor ends.
	err := roundTrip(a, ra, "anyone?", 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silenced connection: %v, want a timeout", err)
	}
	// A new connection passes.
	b, rb := dialProxy(t, p)
	if err := roundTrip(b, rb, "new", 5*time.Second); err != nil {
		t.Fatalf("new connection after Silence: %v", err)
	}
	if p.Open() != 1 || p.Accepted() != 2 {
		t.Errorf("open %d, accepted %d; want 1, 2", p.Open(), p.Accepted())
	}
	// Closing the silenced client is not passed on: the server never
	// learns, as with a dropped flow.
	a.Close()
	time.Sleep(200 * time.Millisecond) // absence of an event: nothing to wait for
	if n := echo.endedConns(); n != 0 {
		t.Errorf("the server saw %d clients go away through a silenced connection", n)
	}
	// An open one's close is passed on.
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for echo.endedConns() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the server did not see the client of a live connection close")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxyLatency(t *testing.T) {
	echo := startEcho(t)
	p := testenv.StartProxy(t, echo.ln.Addr().String())
	c, r := dialProxy(t, p)
	mustEcho(t, c, r, "warm")
	const d = 100 * time.Millisecond
	p.SetLatency(d)
	began := time.Now()
	for i := 0; i < 3; i++ {
		mustEcho(t, c, r, "slow")
	}
	took := time.Since(began)
	t.Logf("3 round trips with %v each way took %v", d, took)
	if took < 3*2*d {
		t.Errorf("3 round trips took %v, want at least %v", took, 3*2*d)
	}
	// Order is kept under latency: many lines in one go come back in order.
	w := bufio.NewWriter(c)
	for i := 0; i < 100; i++ {
		w.WriteString("line\n")
	}
	w.Flush()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 100; i++ {
		if s, err := r.ReadString('\n'); err != nil || s != "line\n" {
			t.Fatalf("line %d: %q %v", i, s, err)
		}
	}
	p.SetLatency(0)
	began = time.Now()
	mustEcho(t, c, r, "fast")
	if took := time.Since(began); took >= 2*d {
		t.Errorf("round trip after SetLatency(0) took %v", took)
	}
}

func TestProxyReset(t *testing.T) {
	echo := startEcho(t)
	p := testenv.StartProxy(t, echo.ln.Addr().String())
	a, ra := dialProxy(t, p)
	mustEcho(t, a, ra, "x")
	b, rb := dialProxy(t, p)
	mustEcho(t, b, rb, "y")
	p.Silence() // a reset reaches silenced connections too
	if n := p.Reset(); n != 2 {
		t.Fatalf("reset %d connections, want 2", n)
	}
	for _, c := range []struct {
		conn net.Conn
		r    *bufio.Reader
	}{{a, ra}, {b, rb}} {
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.r.ReadByte()
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Errorf("read after Reset: %v, want a reset", err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the client did not learn of the reset")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for echo.endedConns() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the server saw %d of 2 connections end", echo.endedConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, r := dialProxy(t, p)
	if err := roundTrip(c, r, "after", 5*time.Second); err != nil {
		t.Fatalf("new connection after Reset: %v", err)
	}
}
