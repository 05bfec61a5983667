package broadcast

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// Close codes walcast uses beyond the standard ones.
const (
	CloseTokenExpired = 4001 // the token expired without a fresh auth frame
	CloseAuthChanged  = 4003 // an auth frame named another user
	CloseTooSlow      = 4008 // the client's queue overflowed; resume from the last id
)

// History answers resume requests.
type History interface {
	// Since returns up to limit messages after pos, oldest first. It returns
	// ErrTooOld or ErrUnknownPosition when pos cannot be resumed from.
	Since(ctx context.Context, pos schema.Position, limit int) ([]*schema.Message, error)
	// Head returns the newest stored position.
	Head(ctx context.Context) (schema.Position, error)
}

// client is one WebSocket connection.
type client struct {
	ws        *websocket.Conn
	srv       *Server
	principal atomic.Pointer[Principal]
	filter    atomic.Pointer[filter]
	cursor    atomic.Uint64 // hub window sequence of the next message to consider
	dcursor   atomic.Uint64 // hub dashboard sequence of the next dashboard to consider
	slow      atomic.Bool   // set by the hub when the cursor fell out of its window
	// wake, when not nil, is signalled instead of the delivery workers: a
	// client of the hub's tests that waits for its wake-ups itself.
	wake chan struct{}
	// wokenGen and indexed are the hub's bookkeeping, under the hub's lock.
	wokenGen uint64
	indexed  *Principal
	// writingSince is when the waiting write in progress started (unix
	// nanos), or 0: the watchdog's view of a hung socket.
	writingSince atomic.Int64
	// batch is the connection under the library, which walcast writes its
	// frames to.
	batch *batchConn

	// Delivery (see fanout.go): own is write ownership; pending, a
	// wake-up that found it taken; queued, that a worker has c in its
	// queue; done, that the connection is closing and owed nothing more.
	// fan, shard and idx place it among the workers.
	own     sync.Mutex
	pending atomic.Bool
	queued  atomic.Bool
	done    atomic.Bool
	fan     *fanout
	shard   int
	idx     int

	// The rest is the owner's (write ownership held) unless noted.
	// out collects frames for one socket write: nil between writes.
	out  *[]byte
	last schema.Position // newest position this connection stands past
	sent schema.Position // newest id actually sent on it
	// remote, proxy and path describe the connection in logs (logger).
	remote, proxy netip.Addr
	path          string
	// cancel ends the session's context: what the reader waits for (a
	// replay's read of the bus, a sync's read of the state) stops with it.
	cancel context.CancelFunc
	// timer fires at the next of the connection's timed events: its
	// token's expiry (expires, unix nanos; close 4001) and its next ping
	// (nextPing). One timer, not a goroutine: see tick.
	timer             atomic.Pointer[time.Timer]
	expires, nextPing atomic.Int64

	// dash is the dashboards to send after the welcome, taken when the
	// client registered; dashFloor is the dashboard sequence the newest
	// dashboard resend is current at: older dashboard messages are
	// superseded. syncAtConnect is a ?sync= to serve after the welcome.
	dash          []*schema.Message
	dashFloor     uint64
	syncAtConnect *filter

	// ev queues presence and typing frames for delivery; typing limits
	// the typing frames the client sends (reader only), presenceLimit its
	// presence frames.
	ev            clientEvents
	typing        typingLimiter
	presenceLimit presenceLimiter
	authLimit     rateBucket // auth frames; reader only
	// resumes limits the resume frames the client sends (reader only).
	resumes rateBucket
	// syncs limits the sync frames the client sends (reader only).
	syncs rateBucket
}

// session drives the connection until it ends, returning why. Its
// goroutine is the connection's only one: it greets the client, then
// reads client frames; the delivery workers write what the hub has.
//
// at is where the hub stood when the client registered: the client's
// cursor follows everything after it. The session starts owning the
// connection's writes (newClient), so nothing is delivered before the
// welcome.
func (s *Server) session(c *client, at schema.Position, since *schema.Position) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel // owned: the workers see it once the greeting released c
	defer func() {
		c.done.Store(true) // a tick running now sets no next timer
		cancel()
		if t := c.timer.Load(); t != nil {
			t.Stop()
		}
	}()
	err := s.greet(ctx, c, at, since)
	if err == nil {
		err = c.flushOut()
	}
	c.releaseAndServe()
	if err != nil {
		return err
	}
	c.expires.Store(c.principal.Load().Expires.UnixNano())
	c.nextPing.Store(time.Now().Add(s.cfg.PingInterval).UnixNano())
	// Stored before it is set, so that tick finds it.
	c.timer.Store(time.AfterFunc(time.Hour, func() { s.tick(c) }))
	c.setTimer()
	return s.read(ctx, c)
}

// untilNext is how long until c's next timed event.
func (c *client) untilNext() time.Duration {
	return time.Until(time.Unix(0, min(c.expires.Load(), c.nextPing.Load())))
}

// tick handles c's timed events, on its timer's goroutine: it closes the
// connection when the token expired, and pings it when a ping is due. The
// library's Ping waits for the pong, which the reader receives; a client
// that does not answer within PongTimeout is dropped. The timer is set
// for the next event before the ping, so an expiry meanwhile is on time.
func (s *Server) tick(c *client) {
	now := time.Now()
	if now.UnixNano() >= c.expires.Load() {
		c.done.Store(true)
		c.ws.Close(CloseTokenExpired, "token expired")
		return
	}
	if now.UnixNano() < c.nextPing.Load() {
		c.setTimer() // an auth frame moved the expiry
		return
	}
	c.nextPing.Store(now.Add(s.cfg.PingInterval).UnixNano())
	c.setTimer()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PongTimeout)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		if !c.done.Load() {
			c.logger().Debug("dropping a client that did not answer a ping", "err", err)
		}
		c.done.Store(true)
		c.ws.CloseNow()
	}
}

// setTimer sets c's timer for its next timed event, unless the session
// ended.
func (c *client) setTimer() {
	if t := c.timer.Load(); t != nil && !c.done.Load() {
		t.Reset(c.untilNext())
	}
}

// greet sends the welcome, the replay the client asked for at connect
// (since, when not nil) and the dashboards current at registration (the
// window holds what changed since); the owner calls it.
func (s *Server) greet(ctx context.Context, c *client, at schema.Position, since *schema.Position) error {
	if err := c.send(ctx, welcomeFrame(at)); err != nil {
		return err
	}
	c.last = at
	if since != nil {
		if err := s.replay(ctx, c, *since); err != nil {
			return err
		}
	}
	if err := c.sendDashboards(ctx, c.dash); err != nil {
		return err
	}
	c.dash = nil
	if nf := c.syncAtConnect; nf != nil { // ?sync= at connect
		c.syncAtConnect = nil
		return s.sync(ctx, c, nf)
	}
	return nil
}

// read handles client frames until the connection closes. Protocol errors
// are answered with an error frame and the connection stays open. Each
// frame is handled owning the connection's writes, so what it sends (and
// what it changes: the token, the subscription, the cursor of a replay)
// falls between two deliveries.
func (s *Server) read(ctx context.Context, c *client) error {
	for {
		// No deadline: one would cost a timer per read. Pings bound the
		// life of a silent connection.
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			return err
		}
		c.own.Lock()
		err = s.handle(ctx, c, typ, b)
		if ferr := c.flushOut(); err == nil {
			err = ferr
		}
		c.releaseAndServe()
		if err != nil {
			return err
		}
	}
}

// handle answers one client frame; the reader calls it owning the writes.
func (s *Server) handle(ctx context.Context, c *client, typ websocket.MessageType, b []byte) error {
	if typ != websocket.MessageText {
		return c.send(ctx, errorFrame("bad_frame", "frames must be JSON text"))
	}
	f, err := parseFrame(b, s.customTypes)
	if err != nil {
		var fe *frameError
		if errors.As(err, &fe) {
			return c.send(ctx, errorFrame(fe.code, fe.message))
		}
		return err
	}
	switch f.Type {
	case "ping":
		return c.send(ctx, pongFrame)
	case "subscribe":
		nf := narrow(c.principal.Load(), f)
		c.filter.Store(nf)
		if err := c.send(ctx, subscribedFrame(nf)); err != nil {
			return err
		}
		if nf.allows(&schema.Message{Type: schema.TypeDashboard}) {
			return s.resendDashboards(ctx, c)
		}
	case "resume":
		if ok, _ := c.resumes.take(time.Now(), resumeRate, resumeBurst); !ok {
			return c.send(ctx, errorFrame("rate_limited", resumeLimitMessage))
		}
		pos, _ := schema.ParsePosition(f.Since)
		return s.replay(ctx, c, pos)
	case "sync":
		return s.requestSync(ctx, c, f)
	case "auth":
		return s.reauth(ctx, c, f.Token)
	case "presence":
		if c.ev.events == nil {
			// Made on the first presence frame: most connections never
			// send one. Only connections in presence are pushed frames,
			// and this one joins after this (under presence's lock).
			c.ev.events = make(chan presenceEvent, eventQueue)
		}
		viewing := ""
		if f.Viewing != nil {
			viewing = *f.Viewing
		}
		s.presence.request(c, viewing)
	case "typing":
		if c.typing.allow(time.Now()) {
			s.presence.typing(c, f.Target)
		}
	}
	return nil
}

// logger returns the connection's logger, made when something is logged:
// an idle connection keeps no logger of its own.
func (c *client) logger() *slog.Logger {
	log := c.srv.log.With("remote", c.remote.String(), "path", c.path)
	if c.proxy != c.remote {
		log = log.With("proxy", c.proxy.String())
	}
	if p := c.principal.Load(); p != nil {
		log = log.With("user_id", p.UserID, "role", p.Role)
	}
	return log
}

// resendDashboards sends the dashboards c may see now, superseding the
// older dashboard messages still owed from the window.
func (s *Server) resendDashboards(ctx context.Context, c *client) error {
	var msgs []*schema.Message
	msgs, c.dashFloor = s.cfg.Hub.dashboardsSince(c.principal.Load())
	return c.sendDashboards(ctx, msgs)
}

// send queues one frame for the owner's next write (flushOut, or a
// worker's). It passes no deadline to anything, which would cost a timer
// per frame on the hottest path; the watchdog (Server.Watch) closes
// connections whose writes hang. Only very large runs of frames (a sync's
// rows) are written before the owner is done.
func (c *client) send(ctx context.Context, frame []byte) error {
	c.appendFrame(frame)
	if len(*c.out) >= sendFlushAt {
		return c.flushOut()
	}
	return nil
}

// sendFlushAt is how much an owner collects before writing, waiting.
const sendFlushAt = 256 << 10

// appendFrame adds frame, as an unmasked text frame, to c.out.
func (c *client) appendFrame(frame []byte) {
	if c.out == nil {
		c.out = batchBufs.Get().(*[]byte)
	}
	*c.out = appendTextFrame(*c.out, frame)
}

// appendTextFrame appends payload as one final, unmasked text frame
// (RFC 6455 section 5.2): a header of 2, 4 or 10 bytes, then the bytes.
// Server frames are never masked, so the frame of a message is the same
// for every connection; only the header is built per write.
func appendTextFrame(b, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// flushOut writes c.out, waiting as long as it takes; the watchdog sees
// the write.
func (c *client) flushOut() error { return c.flushRest(false) }

// flushRest is flushOut; held says a tryWrite left the connection's lock
// held (its write stopped inside a frame), and c.out is the rest of it.
func (c *client) flushRest(held bool) error {
	if c.out == nil {
		return nil
	}
	var err error
	if b := *c.out; len(b) > 0 && c.batch != nil {
		c.writingSince.Store(time.Now().UnixNano())
		if held {
			err = c.batch.writeHeld(b)
		} else {
			err = c.batch.writeAll(b)
		}
		c.writingSince.Store(0)
	}
	c.dropOut()
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// dropOut returns c.out to the pool, unless a huge batch grew it.
func (c *client) dropOut() {
	if b := c.out; b != nil {
		c.out = nil
		if cap(*b) <= 256<<10 {
			*b = (*b)[:0]
			batchBufs.Put(b)
		}
	}
}
