package broadcast

import (
	"context"
	"errors"

	"github.com/walcast/walcast/schema"
)

// deliverChunk bounds what one write of a worker collects: a client far
// behind (a replay from the start of the window) is served in writes of
// this size, and gives its worker back once its socket is full.
const deliverChunk = 64 << 10

// serve delivers what c is owed, unless someone else is writing to it
// (then they have it served again when done). A delivery worker calls it.
func (s *Server) serve(c *client) {
	if !c.tryOwn() {
		return
	}
	if s.drain(c) {
		c.release()
	}
}

// drain writes what c is owed, without waiting on its socket. When the
// socket takes only part, a goroutine finishes the write and keeps the
// ownership until then: drain returns false, as it did not release it.
func (s *Server) drain(c *client) (release bool) {
	for {
		more, err := s.owed(c)
		if err == nil && c.out == nil {
			return true
		}
		var n int
		var held bool
		if err == nil {
			n, held, err = c.batch.tryWrite(*c.out)
		}
		if err != nil {
			c.dropOut()
			s.fail(c, err)
			return true
		}
		b := *c.out
		if n < len(b) {
			*c.out = b[:copy(b, b[n:])]
			go s.finish(c, held)
			return false
		}
		c.dropOut()
		if !more {
			return true
		}
	}
}

// finish writes what a worker could not, waiting (the watchdog sees it),
// then hands c back to the workers with what accumulated meanwhile. It
// owns c's writes from drain, and the connection's lock when held (the
// worker's write stopped inside a frame), and ends when the write does.
func (s *Server) finish(c *client, held bool) {
	if err := c.flushRest(held); err != nil {
		s.fail(c, err)
	}
	c.releaseAndServe()
}

// fail ends a connection whose delivery failed: errSlow closes it with
// 4008 (it resumes from its last id), anything else at once. The session
// ends when its reader sees the close.
func (s *Server) fail(c *client, err error) {
	if !c.done.CompareAndSwap(false, true) {
		return
	}
	if c.cancel != nil {
		c.cancel()
	}
	if errors.Is(err, errSlow) {
		// Close waits for the client's answer: not on a worker.
		go c.ws.Close(CloseTooSlow, "too slow: reconnect and resume from your last id")
		return
	}
	c.logger().Debug("delivery failed", "err", err)
	go c.ws.CloseNow()
}

// owed collects into c.out the frames c is owed: queued presence and
// typing frames, then the window's messages after its cursor, up to
// deliverChunk bytes; more says there are more messages. The owner calls
// it.
func (s *Server) owed(c *client) (more bool, err error) {
	if c.done.Load() {
		return false, nil
	}
	for {
		select {
		case ev := <-c.ev.events:
			if err := s.sendEvent(context.Background(), c, ev); err != nil {
				return false, err
			}
			continue
		default:
		}
		break
	}
	p, f := c.principal.Load(), c.filter.Load()
	var buf [32]entry
	h := s.cfg.Hub
	for {
		cur := cursors{c.cursor.Load(), c.dcursor.Load()}
		n, to, caughtUp, lost, lapped := h.nextFor(cur, buf[:], p, f)
		if lost || c.slow.Load() {
			return false, errSlow
		}
		if lapped {
			c.catchUpDashboards(p, f)
			continue
		}
		if n > 0 {
			h.delivered.Add(c.appendEntries(p, f, buf[:n]))
			clear(buf[:n])
		}
		if to.s != cur.s {
			c.cursor.Store(to.s)
		}
		if to.d != cur.d {
			c.dcursor.Store(to.d)
		}
		if caughtUp {
			return false, nil
		}
		if c.out != nil && len(*c.out) >= deliverChunk {
			return true, nil
		}
	}
}

// appendEntries adds to c.out the window entries es: markers, and the
// messages after the last one sent that no resend superseded. It returns
// how many changes it added (the hub's delivered counter).
func (c *client) appendEntries(p *Principal, f *filter, es []entry) (changes uint64) {
	for _, e := range es {
		m := e.m
		if isMarker(m) {
			c.appendFrame(m.JSON)
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
		c.appendFrame(frame)
		c.last, c.sent = m.Pos, m.Pos
		if m.DashboardKey == "" { // deliveries count changes
			changes++
		}
	}
	return changes
}
