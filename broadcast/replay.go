package broadcast

import (
	"context"
	"errors"
	"fmt"

	"github.com/walcast/walcast/schema"
)

// Resume: a client that sends a position (?since= at connect, or a resume
// frame) receives what it missed after it. The hub's window holds the
// newest messages, so a replay from inside it reads nothing from the bus:
// the client's cursor moves back to the first message after the position
// and the delivery workers serve it from there like live traffic. Only a
// position older than the window (a replica that started recently) is
// read from the bus, a bounded number of entries, and a position the
// window proves too old gets resync_required without any read. A connection can ask for
// a bounded number of resumes per second. None of this costs more than
// the connection is allowed to receive.

const (
	// replayPage is how many entries one read of the bus returns.
	replayPage = 1000
	// MaxReplayRead bounds the entries one replay reads from the bus
	// (positions the window cannot serve): past it, the client gets
	// resync_required, as if it had fallen out of history.
	MaxReplayRead = 10 * replayPage
	// Resume frames a connection may send: resumeRate per second, in
	// bursts of resumeBurst; more are answered with a rate_limited error.
	resumeRate  = 1.0
	resumeBurst = 3.0
)

const resumeLimitMessage = "too many resume frames: at most 1 per second; the connection stays open"

// errReplayTooLong is the resync reason of a replay that would read more
// of the bus than MaxReplayRead.
var errReplayTooLong = errors.New("position is further behind than a replay may read")

// windowHistory is what the hub's window proves about the history it
// holds; under the hub's lock. The messages from sequence floor on are
// one history: a resync marker starts a new one, and no replay reaches
// back across it.
type windowHistory struct {
	floor uint64 // sequence of the first message of the current history
	// depth is how many of the newest messages are resumable from the
	// window: the bus's history (--history), so that the window never
	// serves a position the bus has trimmed; 0: the whole window.
	depth int
	// fromStart: the current history began with the bus's (the bus was
	// empty, or a new epoch began), so since=0-0 is the whole of it as
	// long as none of it left the window.
	fromStart bool
	evicted   schema.Position // newest message of the current history overwritten in the window
	// earlier: non-zero ids at or below it belong to an earlier epoch,
	// whatever the window holds now.
	earlier schema.Position
}

// evict notes that the message at seq leaves the window.
func (w *windowHistory) evict(seq uint64, m *schema.Message) {
	if seq >= w.floor && !isMarker(m) {
		w.evicted = m.Pos
	}
}

// marked starts a new history at sequence next, after a resync marker;
// epoch says it begins a new epoch whose ids restart below earlier.
func (w *windowHistory) marked(next uint64, epoch bool, earlier *schema.Position) {
	w.floor, w.evicted, w.fromStart = next, schema.Position{}, epoch
	if earlier != nil && w.earlier.Less(*earlier) {
		w.earlier = *earlier
	}
}

// LimitResume makes only the newest n messages of the window resumable:
// the history the bus keeps, so that the window never answers a position
// the bus calls too old.
func (h *Hub) LimitResume(n int) {
	h.mu.Lock()
	h.resume.depth = n
	h.mu.Unlock()
}

// ForgetEarlier makes ids at or below pos (non-zero) too old to resume
// from: they belong to an earlier epoch of the bus.
func (h *Hub) ForgetEarlier(pos schema.Position) {
	h.mu.Lock()
	if h.resume.earlier.Less(pos) {
		h.resume.earlier = pos
	}
	h.mu.Unlock()
}

// resumeCapacity is how many of the newest messages the window can serve
// replays from.
func (h *Hub) resumeCapacity() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return int(h.resumeSpan())
}

// resumeSpan is how many of the newest messages replays are served from;
// h.mu is held. It leaves an eighth of the window as a margin: a client
// moved back to the oldest message it serves is not closed as too slow by
// the next publish.
func (h *Hub) resumeSpan() uint64 {
	n := uint64(len(h.window))
	span := max(1, n-n/8)
	if d := uint64(h.resume.depth); d > 0 && d < span {
		return d
	}
	return span
}

// oldestResumable is the window sequence of the oldest message replays
// are served from, but for the current history's floor; h.mu is held. It
// is the first of the newest resumeSpan, and with LimitResume the first
// of the messages among the newest depth stored, dashboards included:
// the bus's history counts them, and the window holds changes only.
func (h *Hub) oldestResumable() uint64 {
	n := uint64(len(h.window))
	var lo uint64
	if span := h.resumeSpan(); h.head > span {
		lo = h.head - span
	}
	d := uint64(h.resume.depth)
	if d == 0 || h.total <= d {
		return lo
	}
	oldest := h.total - d // the order of the oldest message the bus holds
	i, j := lo, h.head    // order increases along the window: binary search
	for i < j {
		mid := i + (j-i)/2
		if h.order[mid%n] < oldest {
			i = mid + 1
		} else {
			j = mid
		}
	}
	return i
}

// Preload fills an empty hub's window with the newest stored messages,
// oldest first, so that it serves replays without reading the bus: before
// is the position of the message just before them (zero when none), and
// complete says they are the bus's whole history. It does nothing, and
// returns false, once the hub has published or has clients: they would
// take the preloaded messages for live ones.
func (h *Hub) Preload(msgs []*schema.Message, before schema.Position, complete bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.head != 0 || h.dhead != 0 || len(h.clients) != 0 || len(msgs) > len(h.window) {
		return false
	}
	for _, m := range msgs {
		h.last = m.Pos
		if m.DashboardKey != "" {
			// No connection is owed it: a dashboard only counts in the
			// order (for LimitResume) and is kept as its newest.
			h.total++
			h.keepDashboard(m)
			continue
		}
		h.window[h.head%uint64(len(h.window))], h.order[h.head%uint64(len(h.window))] = m, h.total
		h.head++
		h.total++
	}
	h.resume.evicted, h.resume.fromStart = before, complete && before.IsZero()
	h.fan.head.Store(h.head)
	return true
}

// seekResult says where a replay goes.
type seekResult int

const (
	askBus   seekResult = iota // the window cannot tell: read the bus
	inWindow                   // every message after the position is in the window
	tooOld                     // the position is older than the history: resync
)

// seek finds the window sequence of the first message after pos, when the
// window proves it holds every message of the current history after pos.
func (h *Hub) seek(pos schema.Position) (uint64, seekResult) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r := &h.resume
	if !pos.IsZero() && !r.earlier.IsZero() && !r.earlier.Less(pos) {
		return 0, tooOld // an id of an earlier epoch
	}
	if h.last.Less(pos) {
		return 0, askBus // newer than this replica has read: the bus knows
	}
	lo := max(r.floor, h.oldestResumable()) // the oldest resumable sequence
	// before: the position just before the oldest resumable message, when
	// known; nothing lies between it and that message.
	var before schema.Position
	known := false
	switch {
	case lo > r.floor && h.head-(lo-1) <= uint64(len(h.window)):
		before, known = h.window[(lo-1)%uint64(len(h.window))].Pos, true
	case !r.evicted.IsZero(): // overwritten, or the entry before a preload
		before, known = r.evicted, true
	case lo == r.floor && r.fromStart:
		known = true // the beginning: before is the zero position
	}
	if known && pos == before {
		return lo, inWindow
	}
	if lo == h.head {
		return 0, askBus
	}
	if oldest := h.window[lo%uint64(len(h.window))].Pos; pos.Less(oldest) {
		switch {
		case lo == r.floor && r.fromStart:
			return 0, tooOld // not an id of this history: it is all here
		case known && before.Less(pos):
			return lo, inWindow // between two messages: nothing missed
		}
		// Older than the window: only the bus knows whether it still
		// holds the position (its history counts changes, the window
		// dashboards too); it says so from its metadata, and a replay
		// reads at most MaxReplayRead entries.
		return 0, askBus
	}
	// Positions increase through the current history: binary search.
	i, j := lo, h.head
	for i < j {
		mid := i + (j-i)/2
		if pos.Less(h.window[mid%uint64(len(h.window))].Pos) {
			j = mid
		} else {
			i = mid + 1
		}
	}
	return i, inWindow
}

// replay sends what the client missed after pos; the owner of its writes
// calls it. From the window, it moves the client's cursor back and lets
// the delivery workers deliver; what the
// window cannot serve is read from history, at most MaxReplayRead entries.
// Live messages queue meanwhile; those the replay already covered are
// skipped by the id check in appendEntries.
func (s *Server) replay(ctx context.Context, c *client, pos schema.Position) error {
	s.resumes.Add(1)
	if pos.Less(c.sent) {
		pos = c.sent // each id goes out at most once per connection
	}
	c.last = pos
	read := 0
	for {
		seq, where := s.cfg.Hub.seek(pos)
		switch where {
		case inWindow:
			c.rewind(seq)
			return nil
		case tooOld:
			return s.resync(ctx, c, ErrTooOld)
		}
		if read >= MaxReplayRead {
			return s.resync(ctx, c, errReplayTooLong)
		}
		msgs, err := s.cfg.History.Since(ctx, pos, replayPage)
		if errors.Is(err, ErrTooOld) || errors.Is(err, ErrUnknownPosition) {
			return s.resync(ctx, c, err)
		}
		if err != nil {
			return fmt.Errorf("replay since %s: %w", pos, err)
		}
		read += len(msgs)
		p, f := c.principal.Load(), c.filter.Load()
		for _, m := range msgs {
			// Dashboards are snapshots: the newest of each follows the
			// replay, older ones would only be undone by it.
			if frame := frameFor(p, f, m); m.DashboardKey == "" && frame != nil {
				if err := c.send(ctx, frame); err != nil {
					return err
				}
				c.sent = m.Pos
			}
			c.last = m.Pos
			pos = m.Pos
		}
		if len(msgs) < replayPage {
			return nil
		}
	}
}

// rewind makes the workers deliver the window from seq: the replay. The
// dashboard cursor stays where it is: the dashboards in between are older
// than those the client has or is about to be sent. Only the owner calls
// it.
func (c *client) rewind(seq uint64) {
	if seq >= c.cursor.Load() {
		return // delivery has not reached seq yet: the id check skips the rest
	}
	c.cursor.Store(seq)
}

// resync tells the client its position cannot be resumed from (why), and
// where the connection continues.
func (s *Server) resync(ctx context.Context, c *client, why error) error {
	head, err := s.cfg.History.Head(ctx)
	if err != nil {
		return fmt.Errorf("read head: %w", err)
	}
	c.last = head
	return c.send(ctx, resyncFrame(why.Error(), &head))
}
