package testenv

import (
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from its own address to one server and
// breaks them on demand, the ways networks break:
//
//   - [Proxy.Silence] stops forwarding on every open connection, both ways,
//     without closing anything: neither end sees FIN or RST, bytes simply
//     stop, as when a NAT entry expires or a firewall drops a flow. New
//     connections still pass.
//   - [Proxy.SetLatency] delays every chunk of data, both ways, on open and
//     new connections.
//   - [Proxy.Reset] resets every open connection (RST to both ends).
//
// Point a client at [Proxy.Addr] instead of the server's address. The
// proxy runs in the test process; t.Cleanup closes it and every connection
// it carries.
//
// A silenced connection's bytes are read and dropped by the proxy's
// kernel, so the sender's TCP sees its data acknowledged: what a silent
// connection tests is the application's own deadlines, not TCP's
// retransmission timeout (TCP_USER_TIMEOUT) or keepalive, which only a
// real packet loss would trigger.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu      sync.Mutex
	conns   map[*proxyConn]struct{}
	latency time.Duration
	closed  bool
	total   int // connections accepted
}

// proxyConn is one client connection and its server connection.
type proxyConn struct {
	client, server net.Conn
	silenced       chan struct{} // closed by Silence
	done           chan struct{} // closed when both ends are closed
	silenceOnce    sync.Once
	closeOnce      sync.Once
}

// StartProxy listens on a free 127.0.0.1 port and forwards every
// connection to target (host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy is StartProxy without a test: the caller closes it.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the host:port clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Accepted returns how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// Open returns how many connections are open and not silenced.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		select {
		case <-c.silenced:
		default:
			n++
		}
	}
	return n
}

// Silence stops forwarding on every open connection, both ways, for good,
// and leaves them open: data sent to them is dropped, and their ends learn
// nothing. Connections opened afterwards pass. It returns how many
// connections it silenced.
func (p *Proxy) Silence() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.silenceOnce.Do(func() { close(c.silenced); n++ })
	}
	return n
}

// SetLatency delays every chunk read from now on by d before it is
// forwarded, in both directions (a round trip gains 2d); 0 removes the
// delay. Order is kept.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

func (p *Proxy) currentLatency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency
}

// Reset resets every open connection, silenced ones included: both ends
// get RST. It returns how many it reset.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	conns := slices.Collect(maps.Keys(p.conns))
	p.mu.Unlock()
	for _, c := range conns {
		for _, nc := range []net.Conn{c.client, c.server} {
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close sends RST
			}
		}
		c.close()
	}
	return len(conns)
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	conns := slices.Collect(maps.Keys(p.conns))
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			client.Close() // as a refused connection would be
			continue
		}
		c := &proxyConn{client: client, server: server, silenced: make(chan struct{}), done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.total++
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(c, c.server, c.client) })
		p.wg.Go(func() { p.pump(c, c.client, c.server) })
		p.wg.Go(func() {
			<-c.done
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		})
	}
}

// close closes both ends once.
func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.server.Close()
		close(c.done)
	})
}

func (c *proxyConn) isSilenced() bool {
	select {
	case <-c.silenced:
		return true
	default:
		return false
	}
}

// chunk is data read from one end, due for the other end at due; nil data
// is the end of the stream.
type chunk struct {
	data []byte
	due  time.Time
}

// pump forwards src to dst: a reader goroutine (this one) and a writer
// that holds each chunk until it is due. A silenced connection stops
// reading (its sender's kernel buffers fill up, as with a dead peer) and
// never writes again; an end closed while silenced is not passed on.
func (p *Proxy) pump(c *proxyConn, dst, src net.Conn) {
	q := make(chan chunk, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			var ch chunk
			select {
			case ch = <-q:
			case <-c.done:
				return
			}
			if wait := time.Until(ch.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
			if c.isSilenced() {
				continue
			}
			if ch.data == nil {
				c.close()
				return
			}
			if _, err := dst.Write(ch.data); err != nil {
				if !c.isSilenced() {
					c.close()
				}
				return
			}
		}
	})
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if c.isSilenced() {
			<-c.done
			return
		}
		var ch chunk
		switch {
		case n > 0:
			ch = chunk{data: buf[:n]}
		case err != nil:
			ch = chunk{} // end of stream: close after what is queued
		default:
			continue
		}
		ch.due = time.Now().Add(p.currentLatency())
		select {
		case q <- ch:
		case <-c.done:
			return
		}
		if n > 0 && err == nil {
			continue
		}
		if n > 0 { // data and an error at once: pass the data, then the end
			select {
			case q <- chunk{due: ch.due}:
			case <-c.done:
			}
		}
		<-c.done
		return
	}
}
