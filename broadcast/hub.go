package broadcast

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// DefaultWindow is how many changes a client may fall behind the newest
// before it is closed as too slow (4008); dashboards do not count (they
// have a ring of their own, see dashes.go). A one-statement UPDATE of
// 10,000 rows arrives as one burst, so the window must hold bursts of that
// size; it is shared by all clients, so its size costs nothing per
// connection.
const DefaultWindow = 65536

// Hub fans messages out to connected clients through one shared window of
// recent changes, and a ring of recent dashboards beside it: each client
// follows both with its own cursors, served by the hub's delivery workers
// (see fanout.go). Publishing never waits on a client, and a slow client
// costs no memory of its own; one that falls more than the window behind
// is closed with 4008 and resumes from its last id.
type Hub struct {
	mu     sync.RWMutex
	window []*schema.Message // changes and markers, a ring: sequence s is at s % len
	head   uint64            // sequence of the next change or marker
	// dashes holds the dashboard messages apart from the window, a ring of
	// their own (sequence d is at d % len), so that the window always
	// holds the same number of changes whatever the dashboards' rate:
	// see dashes.go.
	dashes  []dashEntry
	dhead   uint64          // sequence of the next dashboard
	order   []uint64        // order[s % len]: the window message's place among all stored (total then)
	total   uint64          // messages stored: changes, markers and dashboards
	last    schema.Position // position of the newest message published
	clients map[*client]struct{}

	// Who to wake for a message: publishing wakes only the clients that
	// may receive it (admins, the message's committee, its owner), not
	// every connection. Everyone is woken at least every fullWakeEvery, so
	// cursors of clients that see no traffic keep up with the window.
	admins      map[*client]struct{}
	byCommittee map[int64]map[*client]struct{}
	byOwner     map[int64]map[*client]struct{}
	fullWakeAt  time.Time
	fullWakeSeq uint64    // head at the last full wake
	fullWakeDSq uint64    // dhead at the last full wake
	gen         uint64    // publish generation, to wake each client once
	toWake      []*client // scratch, under mu
	// dash holds the newest dashboard_update message of each dashboard
	// (by DashboardKey): what a new connection is sent after its welcome.
	dash map[string]*schema.Message
	// resume is what the window proves about the history it holds, for
	// replays that read nothing from the bus (see replay.go).
	resume windowHistory

	// fan is the delivery workers of the clients a Server registers.
	fan *fanout

	published atomic.Uint64 // messages published
	delivered atomic.Uint64 // messages written to clients
	dropped   atomic.Uint64 // clients closed as too slow
}

// NewHub returns a Hub whose clients may lag up to window messages
// (DefaultWindow when window <= 0).
func NewHub(window int) *Hub {
	if window <= 0 {
		window = DefaultWindow
	}
	return &Hub{
		window:      make([]*schema.Message, window),
		order:       make([]uint64, window),
		dashes:      make([]dashEntry, DashboardWindow(window)),
		clients:     map[*client]struct{}{},
		admins:      map[*client]struct{}{},
		byCommittee: map[int64]map[*client]struct{}{},
		byOwner:     map[int64]map[*client]struct{}{},
		dash:        map[string]*schema.Message{},
		fan:         newFanout(),
	}
}

// Publish adds msgs, in order, to the window and wakes the clients. The
// messages must not be modified afterwards: clients share them.
func (h *Hub) Publish(msgs []*schema.Message) {
	if len(msgs) == 0 {
		return
	}
	h.mu.Lock()
	h.store(msgs, nil)
	h.wakeFor(msgs)
}

// store adds msgs to the window; h.mu is held. epoch, when not nil, is
// the earlier epoch's newest id, for an epoch marker among msgs.
func (h *Hub) store(msgs []*schema.Message, epoch *schema.Position) {
	for _, m := range msgs {
		if m.DashboardKey != "" {
			h.storeDashboard(m)
			continue
		}
		i := h.head % uint64(len(h.window))
		if old := h.window[i]; old != nil {
			h.resume.evict(h.head-uint64(len(h.window)), old)
		}
		h.window[i], h.order[i] = m, h.total
		h.head++
		h.total++
		switch {
		case m.Type == typeEpoch:
			h.resume.marked(h.head, true, epoch)
			h.last = schema.Position{} // ids start over
			clear(h.dash)              // the new epoch's dashboards follow
		case isMarker(m):
			h.resume.marked(h.head, false, nil)
		default:
			h.last = m.Pos
		}
	}
	h.fan.head.Store(h.head)
	h.fan.dhead.Store(h.dhead)
}

// wakeFor wakes the clients that may receive msgs and releases h.mu.
func (h *Hub) wakeFor(msgs []*schema.Message) {
	h.gen++
	wake := h.toWake[:0]
	var slow []*client
	now := time.Now()
	// Wake everyone also after a quarter of either ring: a burst for a
	// few clients (a round of dashboards, one per user) would otherwise
	// lap the idle ones' cursors between two timed wakes.
	all := now.Sub(h.fullWakeAt) >= fullWakeEvery || h.head-h.fullWakeSeq >= uint64(len(h.window)/4) ||
		h.dhead-h.fullWakeDSq >= uint64(len(h.dashes)/4)
	if !all {
		wake = h.collect(wake, h.admins) // admins receive everything
	}
	// Committees and owners already collected, for bursts. Keyed apart:
	// ids are any 64-bit integers, so no arithmetic can fold the two sets
	// into one without two ids colliding (committee -2 and owner 0 did).
	type scope struct {
		owner bool
		id    int64
	}
	var seen map[scope]bool
	if len(msgs) > 8 {
		seen = map[scope]bool{}
	}
	for _, m := range msgs {
		if all {
			break
		}
		if m.Left != nil { // the row left these: they are told
			wake, all = h.collectLeft(wake, m.Left)
		}
		if isMarker(m) || (!m.HasCommittee && !m.HasOwner && !m.AdminOnly) {
			all = true // election-wide: everyone may receive it
			break
		}
		if m.AdminOnly {
			continue
		}
		if c := (scope{false, m.Committee}); m.HasCommittee && (seen == nil || !seen[c]) {
			wake = h.collect(wake, h.byCommittee[m.Committee])
			if seen != nil {
				seen[c] = true
			}
		}
		if o := (scope{true, m.Owner}); m.HasOwner && (seen == nil || !seen[o]) {
			wake = h.collect(wake, h.byOwner[m.Owner])
			if seen != nil {
				seen[o] = true
			}
		}
	}
	if all {
		// The delivery workers sweep their shards; only the hub's own
		// test clients are woken one by one.
		h.fullWakeAt, h.fullWakeSeq, h.fullWakeDSq = now, h.head, h.dhead
		wake = wake[:0]
		head := h.head
		for c := range h.clients {
			if c.wake != nil {
				wake = append(wake, c)
			}
			if head-c.cursor.Load() > uint64(len(h.window)) && c.slow.CompareAndSwap(false, true) {
				slow = append(slow, c)
			}
		}
		h.fan.sweepAll()
	}
	for _, c := range wake {
		c.wakeUp()
	}
	h.toWake = wake[:0]
	h.mu.Unlock()
	h.published.Add(uint64(len(msgs)))
	for _, c := range slow {
		h.dropped.Add(1)
		// The client's write may be blocked on a full socket: close from
		// here, in the background, so nobody waits on it.
		go c.ws.Close(CloseTooSlow, "too slow: reconnect and resume from your last id")
	}
}

// typeResync marks a window entry that tells every client to resync
// instead of carrying a message.
const typeResync = "resync_required"

// Resync tells every connected client that messages were lost before they
// reached this hub, so they must refetch (resync_required).
func (h *Hub) Resync(reason string) {
	h.Publish([]*schema.Message{{Type: typeResync, JSON: resyncFrame(reason, nil)}})
}

// typeEpoch marks a window entry that begins a new epoch: the bus's
// history was discarded and ids start over, possibly below earlier ones.
const typeEpoch = "resync_required:epoch"

// isMarker reports whether m is a resync marker rather than a message.
func isMarker(m *schema.Message) bool { return m.Type == typeResync || m.Type == typeEpoch }

// NewEpoch tells every connected client that the bus's history was
// discarded and starts over (a new epoch, see docs/operations.md): they
// must refetch, and the ids that follow may be lower than those before.
// old is the previous epoch's newest id: no id at or below it can be
// resumed from afterwards, whichever epoch it came from.
func (h *Hub) NewEpoch(reason string, old schema.Position) {
	zero := schema.Position{}
	m := &schema.Message{Type: typeEpoch, JSON: resyncFrame(reason, &zero)}
	h.mu.Lock()
	h.store([]*schema.Message{m}, &old)
	h.wakeFor([]*schema.Message{m})
}

// HubStats are the hub's counters since start.
type HubStats struct {
	Clients    int
	Published  uint64 // messages published to the window
	Delivered  uint64 // messages written to clients
	SlowClosed uint64 // clients closed with 4008
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	return HubStats{Clients: h.Clients(), Published: h.published.Load(), Delivered: h.delivered.Load(), SlowClosed: h.dropped.Load()}
}

// Clients returns the number of connected clients.
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// fullWakeEvery bounds how long a client that receives nothing may go
// without moving its cursor: well under the time it takes traffic to fill
// the window, so it is never closed as slow for messages it would not get.
const fullWakeEvery = 100 * time.Millisecond

// collect appends to wake the clients of set not yet woken this publish.
func (h *Hub) collect(wake []*client, set map[*client]struct{}) []*client {
	for c := range set {
		if c.wokenGen != h.gen {
			c.wokenGen = h.gen
			wake = append(wake, c)
		}
	}
	return wake
}

// index files c under what its principal may receive; h.mu is held.
func (h *Hub) index(c *client) {
	p := c.principal.Load()
	c.indexed = p
	if p.Role == RoleAdmin {
		h.admins[c] = struct{}{}
		return
	}
	for id := range p.Committees {
		addTo(h.byCommittee, id, c)
	}
	if p.HasUser {
		addTo(h.byOwner, p.UserID, c)
	}
}

func (h *Hub) unindex(c *client) {
	p := c.indexed
	if p == nil {
		return
	}
	delete(h.admins, c)
	for id := range p.Committees {
		removeFrom(h.byCommittee, id, c)
	}
	if p.HasUser {
		removeFrom(h.byOwner, p.UserID, c)
	}
	c.indexed = nil
}

// reindex follows a principal replaced by an auth frame.
func (h *Hub) reindex(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		h.unindex(c)
		h.index(c)
	}
}

func addTo(m map[int64]map[*client]struct{}, id int64, c *client) {
	set := m[id]
	if set == nil {
		set = map[*client]struct{}{}
		m[id] = set
	}
	set[c] = struct{}{}
}

func removeFrom(m map[int64]map[*client]struct{}, id int64, c *client) {
	if set := m[id]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(m, id)
		}
	}
}

// add registers c with its cursor at the newest message: it receives what
// is published from now on. It returns the position of the newest message
// published before, which is where the client stands.
func (h *Hub) add(c *client) schema.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.cursor.Store(h.head)
	c.dcursor.Store(h.dhead)
	h.clients[c] = struct{}{}
	h.index(c)
	if c.srv != nil && c.wake == nil {
		h.fan.attach(c)
	}
	c.dash = h.dashboardsFor(c.principal.Load())
	return h.last
}

// Start sets the position the hub stands at before its first publish: the
// newest message already stored when a stream reader starts.
func (h *Hub) Start(pos schema.Position) {
	h.mu.Lock()
	if h.head == 0 {
		h.last = pos
		// An empty bus: the window will hold its history from the start.
		h.resume.fromStart = pos.IsZero()
	}
	h.mu.Unlock()
}

func (h *Hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.unindex(c)
	h.mu.Unlock()
	if c.fan != nil {
		c.fan.detach(c)
	}
}

// entry is a message and its sequence: in the window, or among the
// dashboards for a dashboard message.
type entry struct {
	seq uint64
	m   *schema.Message
}

// cursors are where a connection stands: s in the window, d among the
// dashboards.
type cursors struct{ s, d uint64 }

// scanLimit bounds how much of the window one next call looks at under the
// read lock.
const scanLimit = 4096

// nextFor copies into buf the messages after the cursors (cur: the
// window's, dashboards') that a connection of p with subscription f may
// receive (and markers), up to len(buf), in the order they were
// published, looking at no more than scanLimit messages: next for the
// delivery workers, without a filter function to allocate. to holds the
// cursors it reached; caughtUp says they reached the newest messages.
// lost: the window cursor fell out of the window (too slow); a dashboard
// cursor that fell out of its ring is not lost: dashLapped says so, and
// the caller sends the current dashboards instead (see dashes.go).
func (h *Hub) nextFor(cur cursors, buf []entry, p *Principal, f *filter) (n int, to cursors, caughtUp, lost, dashLapped bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.head-cur.s > uint64(len(h.window)) {
		return 0, cur, false, true, false
	}
	if h.dhead-cur.d > uint64(len(h.dashes)) {
		return 0, cur, false, false, true
	}
	s, d := cur.s, cur.d
	for look := 0; look < scanLimit && n < len(buf); look++ {
		var e entry
		switch {
		case d < h.dhead && (s == h.head || h.dashes[d%uint64(len(h.dashes))].order < h.order[s%uint64(len(h.window))]):
			e = entry{seq: d, m: h.dashes[d%uint64(len(h.dashes))].m}
			d++
		case s < h.head:
			e = entry{seq: s, m: h.window[s%uint64(len(h.window))]}
			s++
		default:
			return n, cursors{s, d}, true, false, false
		}
		if isMarker(e.m) || frameFor(p, f, e.m) != nil {
			buf[n] = e
			n++
		}
	}
	return n, cursors{s, d}, s == h.head && d == h.dhead, false, false
}

// each calls f for every client, for shutdown.
func (h *Hub) each(f func(*client)) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.clients {
		f(c)
	}
}

// filter is a connection's subscription: nil sets mean "all".
type filter struct {
	types      map[string]bool
	committees map[int64]bool
}

// allows applies the subscription. Messages without a committee (a user's
// own rows, election-wide results) pass a committee filter: it narrows
// which committees' traffic arrives, not whether the rest does.
func (f *filter) allows(m *schema.Message) bool {
	if f == nil {
		return true
	}
	if f.types != nil && !f.types[m.Type] {
		return false
	}
	if f.committees != nil && m.HasCommittee && !f.committees[m.Committee] {
		return false
	}
	return true
}

// closeAll closes every client with code, for shutdown.
func (h *Hub) closeAll(code websocket.StatusCode, reason string, wait time.Duration) {
	var wg sync.WaitGroup
	h.each(func(c *client) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.ws.Close(code, reason)
		}()
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
}
