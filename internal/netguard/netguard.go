// Package netguard gives walcast's outgoing TCP connections (PostgreSQL and
// Redis) the transport timeouts that notice a dead peer without any help
// from the application: TCP keepalive (idle, interval, count) and
// TCP_USER_TIMEOUT. Start with [Options.Dialer]; [Tracker] closes a pool's
// connections at once when one of them turned out to be silent.
//
// These are the second line of defence. The first is walcast's own
// deadline on every round trip (the replication stall threshold, query
// and Redis timeouts): a peer that still acknowledges packets but sends
// nothing (a stuck server, a half-dead proxy) is only caught there.
package netguard

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options are the TCP settings of a connection. Zero values turn a
// setting off (the operating system's default applies).
type Options struct {
	// KeepAliveIdle is how long a connection may be idle before the first
	// keepalive probe; 0 turns keepalive off.
	KeepAliveIdle time.Duration
	// KeepAliveInterval is the time between unanswered probes.
	KeepAliveInterval time.Duration
	// KeepAliveCount is how many unanswered probes close the connection.
	KeepAliveCount int
	// UserTimeout (TCP_USER_TIMEOUT, Linux) is how long sent data may stay
	// unacknowledged before the kernel closes the connection; it also
	// bounds keepalive's total wait once a probe is out.
	UserTimeout time.Duration
}

// Defaults detect a dead peer within about 30 s: an idle connection
// after 15 s + 3 probes 5 s apart, one with unacknowledged data after 30
// s.
func Defaults() Options {
	return Options{KeepAliveIdle: 15 * time.Second, KeepAliveInterval: 5 * time.Second, KeepAliveCount: 3, UserTimeout: 30 * time.Second}
}

// Dialer returns a net.Dialer that applies o to every TCP connection it
// makes (other networks, such as unix sockets, are left alone).
func (o Options) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if o.KeepAliveIdle > 0 {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: o.KeepAliveIdle, Interval: o.KeepAliveInterval, Count: o.KeepAliveCount}
	} else {
		d.KeepAlive = -1
	}
	if o.UserTimeout > 0 {
		ms := int(o.UserTimeout / time.Millisecond)
		d.Control = func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil
			}
			return setUserTimeout(c, ms)
		}
	}
	return d
}

// DialFunc is the signature of net.Dialer.DialContext, pgconn's DialFunc
// and go-redis's Dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Tracker remembers the connections a dialer opened and still open, so
// that all of them can be closed at once: when one connection of a pool
// went silent, the others (opened over the same path) most likely did
// too, and each would otherwise cost a full timeout before the pool
// discarded it.
//
// OnTimeout, when set, is called when a read on a tracked connection
// failed because a deadline of at least MinWait expired: the connection
// did not answer for that long. Shorter deadlines (a library's speculative
// millisecond reads) are not reported. Set both before the first dial.
type Tracker struct {
	OnTimeout func()
	MinWait   time.Duration

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// Wrap returns dial, with every connection it opens tracked.
func (t *Tracker) Wrap(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, t: t}
		t.mu.Lock()
		if t.conns == nil {
			t.conns = map[*trackedConn]struct{}{}
		}
		t.conns[tc] = struct{}{}
		t.mu.Unlock()
		return tc, nil
	}
}

// CloseAll closes every tracked connection and returns how many it
// closed. Their users get an error on the next read or write and open new
// ones.
func (t *Tracker) CloseAll() int {
	t.mu.Lock()
	conns := slices.Collect(maps.Keys(t.conns))
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// Len returns how many tracked connections are open.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

type trackedConn struct {
	net.Conn
	t *Tracker

	mu          sync.Mutex
	armed, till time.Time // when the read deadline was set, and to what
}

func (c *trackedConn) arm(t time.Time) {
	c.mu.Lock()
	c.armed, c.till = time.Now(), t
	c.mu.Unlock()
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.arm(t)
	return c.Conn.SetDeadline(t)
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.arm(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.t.OnTimeout != nil && IsTimeout(err) {
		c.mu.Lock()
		waited := c.till.Sub(c.armed)
		c.mu.Unlock()
		if waited >= c.t.MinWait {
			c.t.OnTimeout()
		}
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// IsTimeout reports whether err is a timeout: a deadline on the
// connection or a context deadline expired, as opposed to a refused or
// reset connection.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
