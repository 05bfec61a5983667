package netguard

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// silentListener listens on a free loopback port and accepts every
// connection but never answers; its goroutine and the connections end when
// the test does.
func silentListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	return ln
}

func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// The dialer's connections carry the keepalive and user timeout settings.
func TestDialerSetsTransportTimeouts(t *testing.T) {
	ln := silentListener(t)
	o := Options{KeepAliveIdle: 7 * time.Second, KeepAliveInterval: 3 * time.Second, KeepAliveCount: 4, UserTimeout: 12500 * time.Millisecond}
	c, err := o.Dialer(time.Second).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 7},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 3},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 4},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 12500},
	} {
		if got := sockopt(t, c, tc.level, tc.opt); got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, got, tc.want)
		}
	}

	off, err := Options{}.Dialer(time.Second).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if got := sockopt(t, off, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
		t.Errorf("keepalive off: SO_KEEPALIVE = %d", got)
	}
	if got := sockopt(t, off, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); got != 0 {
		t.Errorf("user timeout off: TCP_USER_TIMEOUT = %d", got)
	}
}

func TestTrackerClosesAll(t *testing.T) {
	ln := silentListener(t)
	var tr Tracker
	dial := tr.Wrap(Defaults().Dialer(time.Second).DialContext)
	var conns []net.Conn
	for range 3 {
		c, err := dial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	conns[0].Close()
	if tr.Len() != 2 {
		t.Fatalf("tracked %d, want 2", tr.Len())
	}
	if n := tr.CloseAll(); n != 2 {
		t.Fatalf("closed %d, want 2", n)
	}
	if _, err := conns[2].Write([]byte("x")); err == nil {
		t.Error("write on a closed tracked connection succeeded")
	}
	if !IsTimeout(context.DeadlineExceeded) || IsTimeout(net.ErrClosed) {
		t.Error("IsTimeout")
	}
}

func TestTrackerReportsLongTimeoutsOnly(t *testing.T) {
	ln := silentListener(t)
	var reported int
	tr := &Tracker{MinWait: 50 * time.Millisecond, OnTimeout: func() { reported++ }}
	c, err := tr.Wrap(Defaults().Dialer(time.Second).DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := c.Read(buf); !IsTimeout(err) {
		t.Fatalf("read: %v", err)
	}
	if reported != 0 {
		t.Fatalf("a 1 ms deadline was reported")
	}
	c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(buf); !IsTimeout(err) {
		t.Fatalf("read: %v", err)
	}
	if reported != 1 {
		t.Fatalf("a 100 ms silence reported %d times, want 1", reported)
	}
}
