package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	principal atomic.Pointer[Principal]
	filter    atomic.Pointer[filter]
	cursor    atomic.Uint64 // hub sequence of the next message to consider
	slow      atomic.Bool   // set by the hub when the cursor fell out of its window
	// wake is signalled by the hub when it publishes a message this
	// client may receive (and periodically, to move its cursor).
	wake chan struct{}
	// wokenGen and indexed are the hub's bookkeeping, under the hub's lock.
	wokenGen uint64
	indexed  *Principal
	// writingSince is when the write in progress started (unix nanos), or
	// 0: the watchdog's view of a hung socket.
	writingSince atomic.Int64
	// batch collects a delivery loop's frames into one socket write; nil
	// when the connection was not accepted through batchingWriter.
	batch  *batchConn
	resume chan schema.Position
	reauth chan authChange // a verified auth frame, for the writer to apply
	last   schema.Position // newest position this connection stands past
	sent   schema.Position // newest id actually sent on it
	log    *slog.Logger

	// dash is the dashboards to send after the welcome, taken when the
	// client registered; dashResend asks the writer to send them again
	// (after a subscribe), and dashFloor is the window sequence that
	// resend is current at: older dashboard messages are superseded.
	dash       []*schema.Message
	dashResend chan struct{}
	dashFloor  uint64

	// ev queues presence and typing frames for the writer; typing limits
	// the typing frames the client sends (reader only), presenceLimit its
	// presence frames.
	ev            clientEvents
	typing        typingLimiter
	presenceLimit presenceLimiter
	authLimit     rateBucket // auth frames; reader only
	// resumes limits the resume frames the client sends (reader only).
	resumes rateBucket
	// syncReq hands sync requests to the writer (see sync.go); syncs
	// limits the sync frames the client sends (reader only).
	syncReq chan *filter
	syncs   rateBucket
}

// run drives the connection until it ends, returning why.
func (s *Server) run(ctx context.Context, c *client, at schema.Position, since *schema.Position) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		readErr <- s.read(ctx, c)
		cancel()
	}()
	err := s.write(ctx, c, at, since)
	cancel()
	if rerr := <-readErr; err == nil || errors.Is(err, context.Canceled) {
		err = rerr
	}
	return err
}

// write is the only goroutine that sends messages on the connection, so
// replayed and live messages go out in one order, each id once.
//
// at is where the hub stood when the client registered: the client's
// cursor follows everything after it.
func (s *Server) write(ctx context.Context, c *client, at schema.Position, since *schema.Position) error {
	if err := s.greet(ctx, c, at, since); err != nil {
		return err
	}
	expiry := time.NewTimer(time.Until(c.principal.Load().Expires))
	defer expiry.Stop()
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	buf := make([]entry, 32)
	wants := func(m *schema.Message) bool {
		return isMarker(m) || frameFor(c.principal.Load(), c.filter.Load(), m) != nil
	}
	for {
		// Deliver what the hub has for us after our cursor, then wait to
		// be woken by a publish that may concern us.
		cursor := c.cursor.Load()
		n, to, lost := s.cfg.Hub.next(cursor, buf, wants)
		if lost || c.slow.Load() {
			c.ws.Close(CloseTooSlow, "too slow: reconnect and resume from your last id")
			return errSlow
		}
		var wait <-chan struct{} = c.wake
		if n > 0 {
			if err := s.deliver(ctx, c, buf[:n]); err != nil {
				return err
			}
			clear(buf[:n])
		}
		if to != cursor {
			c.cursor.Store(to)
			wait = ready // look again before sleeping, after control events
		}
		if err := s.await(ctx, c, expiry, ping, wait); err != nil {
			return err
		}
	}
}

// greet sends the welcome, the replay the client asked for at connect
// (since, when not nil) and the dashboards current at registration (the
// window holds what changed since).
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
	select {
	case nf := <-c.syncReq: // ?sync= at connect
		return s.sync(ctx, c, nf)
	default:
	}
	return nil
}

// deliver sends the window entries es in one socket write: markers, and
// the messages after the last one sent that no resend superseded.
func (s *Server) deliver(ctx context.Context, c *client, es []entry) error {
	c.beginBatch()
	p, f := c.principal.Load(), c.filter.Load()
	for _, e := range es {
		m := e.m
		if isMarker(m) {
			if err := c.send(ctx, m.JSON); err != nil {
				return err
			}
			if m.Type == typeEpoch {
				// Ids start over: the new epoch's may be lower.
				c.last, c.sent = schema.Position{}, schema.Position{}
			}
			continue
		}
		if !c.last.Less(m.Pos) {
			continue // already sent by a replay
		}
		if m.DashboardKey != "" && e.seq < c.dashFloor {
			continue // superseded by the dashboards sent after a subscribe
		}
		frame := m.JSON
		if m.Left != nil {
			if frame = frameFor(p, f, m); frame == nil {
				continue // the token or subscription changed since
			}
		}
		if err := c.send(ctx, frame); err != nil {
			return err
		}
		c.last, c.sent = m.Pos, m.Pos
		if m.DashboardKey == "" { // deliveries count changes
			s.cfg.Hub.delivered.Add(1)
		}
	}
	return c.endBatch()
}

// await waits for one event of the connection (a wake-up on wait, a
// control frame, presence, a ping or the token's expiry) and handles it.
func (s *Server) await(ctx context.Context, c *client, expiry *time.Timer, ping *time.Ticker, wait <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-expiry.C:
		c.ws.Close(CloseTokenExpired, "token expired")
		return errors.New("token expired")
	case a := <-c.reauth:
		err := s.applyAuth(ctx, c, a.p)
		close(a.done)
		if err != nil {
			return err
		}
		expiry.Reset(time.Until(a.p.Expires))
	case pos := <-c.resume:
		return s.replay(ctx, c, pos)
	case nf := <-c.syncReq:
		return s.sync(ctx, c, nf)
	case ev := <-c.ev.events:
		return s.sendEvent(ctx, c, ev)
	case <-c.dashResend:
		var msgs []*schema.Message
		msgs, c.dashFloor = s.cfg.Hub.dashboardsSince(c.principal.Load())
		return c.sendDashboards(ctx, msgs)
	case <-ping.C:
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PongTimeout)
		err := c.ws.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	case <-wait:
	}
	return nil
}

// ready is a closed channel: waiting on it does not wait.
var ready = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// beginBatch starts collecting frames for one socket write.
func (c *client) beginBatch() {
	if c.batch != nil {
		c.batch.begin()
	}
}

// endBatch writes the collected frames. The watchdog sees this write like
// any other.
func (c *client) endBatch() error {
	if c.batch == nil {
		return nil
	}
	c.writingSince.Store(time.Now().UnixNano())
	err := c.batch.end()
	c.writingSince.Store(0)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// send writes one frame. It passes no deadline to the library, which would
// cost a timer and a context per frame on the hottest path; instead the
// write's start time is published for the server's watchdog (Server.Watch),
// which closes connections whose writes hang.
func (c *client) send(ctx context.Context, frame []byte) error {
	c.writingSince.Store(time.Now().UnixNano())
	err := c.ws.Write(context.Background(), websocket.MessageText, frame)
	c.writingSince.Store(0)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// read handles client frames until the connection closes. Protocol errors
// are answered with an error frame and the connection stays open.
func (s *Server) read(ctx context.Context, c *client) error {
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageText {
			if err := c.send(ctx, errorFrame("bad_frame", "frames must be JSON text")); err != nil {
				return err
			}
			continue
		}
		f, err := parseFrame(b, s.customTypes)
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				if err := c.send(ctx, errorFrame(fe.code, fe.message)); err != nil {
					return err
				}
				continue
			}
			return err
		}
		switch f.Type {
		case "ping":
			err = c.send(ctx, pongFrame)
		case "subscribe":
			nf := narrow(c.principal.Load(), f)
			c.filter.Store(nf)
			err = c.send(ctx, subscribedFrame(nf))
			if err == nil && nf.allows(&schema.Message{Type: schema.TypeDashboard}) {
				select {
				case c.dashResend <- struct{}{}:
				default: // a resend is already due
				}
			}
		case "resume":
			if ok, _ := c.resumes.take(time.Now(), resumeRate, resumeBurst); !ok {
				err = c.send(ctx, errorFrame("rate_limited", resumeLimitMessage))
				break
			}
			pos, _ := schema.ParsePosition(f.Since)
			select {
			case c.resume <- pos:
			case <-ctx.Done():
				return ctx.Err()
			}
		case "sync":
			err = s.requestSync(ctx, c, f)
		case "auth":
			err = s.reauth(ctx, c, f.Token)
		case "presence":
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
		if err != nil {
			return err
		}
	}
}
