package broadcast

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// ConnLimiter counts every TCP connection a listener accepts, whatever it
// is used for (plain HTTP, keep-alive, WebSocket), and refuses new ones
// beyond a cap. It answers what the per-request limits cannot see: a
// connection that never finishes a request, or sits idle between them,
// still holds a socket and a goroutine until it closes.
type ConnLimiter struct {
	max      int64
	open     atomic.Int64
	accepted atomic.Uint64
	refused  atomic.Uint64
}

// NewConnLimiter returns a limiter allowing max connections open at once.
func NewConnLimiter(max int) *ConnLimiter { return &ConnLimiter{max: int64(max)} }

// Listener wraps ln: a connection accepted while max are open is closed at
// once (the client sees the connection closed before any response) and
// counted as refused.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l}
}

// Open returns how many accepted connections are open.
func (l *ConnLimiter) Open() int64 { return l.open.Load() }

// Accepted returns how many connections were accepted.
func (l *ConnLimiter) Accepted() uint64 { return l.accepted.Load() }

// Refused returns how many connections were closed at once for being over
// the cap.
func (l *ConnLimiter) Refused() uint64 { return l.refused.Load() }

// Max returns the cap.
func (l *ConnLimiter) Max() int { return int(l.max) }

type limitListener struct {
	net.Listener
	l *ConnLimiter
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.l.open.Add(1) > ll.l.max {
			// Refuse without blocking the accept loop: no response is
			// written, since a client over the cap may never read it.
			ll.l.open.Add(-1)
			ll.l.refused.Add(1)
			c.Close()
			continue
		}
		ll.l.accepted.Add(1)
		return &limitConn{Conn: c, l: ll.l}, nil
	}
}

// limitConn gives its slot back once, on the first Close: net/http, a
// hijacking WebSocket library and our own code may each close it.
type limitConn struct {
	net.Conn
	l    *ConnLimiter
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// SyscallConn reaches the socket under the wrapper, so that delivery can
// write to it without waiting (see batchConn.tryWrite).
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
