package broadcast

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// DefaultWindow is how many messages a client may fall behind the newest
// before it is closed as too slow (4008). A one-statement UPDATE of 10,000
// rows arrives as one burst, so the window must hold bursts of that size;
// it is shared by all clients, so its size costs nothing per connection.
const DefaultWindow = 65536

// Hub fans messages out to connected clients through one shared window of
// recent messages: each client's writer follows the window with its own
// cursor. Publishing never waits on a client, and a slow client costs no
// memory of its own; one that falls more than the window behind is closed
// with 4008 and resumes from its last id.
type Hub struct {
	mu      sync.RWMutex
	window  []*schema.Message // ring; message with sequence s is at s % len
	head    uint64            // sequence of the next message to publish
	last    schema.Position   // position of the newest message published
	notify  chan struct{}     // closed and replaced on every publish
	clients map[*client]struct{}
	// dash holds the newest dashboard_update message of each dashboard
	// (by DashboardKey): what a new connection is sent after its welcome.
	dash map[string]*schema.Message

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
		window:  make([]*schema.Message, window),
		notify:  make(chan struct{}),
		clients: map[*client]struct{}{},
		dash:    map[string]*schema.Message{},
	}
}

// Publish adds msgs, in order, to the window and wakes the clients. The
// messages must not be modified afterwards: clients share them.
func (h *Hub) Publish(msgs []*schema.Message) {
	if len(msgs) == 0 {
		return
	}
	h.mu.Lock()
	for _, m := range msgs {
		h.window[h.head%uint64(len(h.window))] = m
		h.head++
		if m.Type != typeResync {
			h.last = m.Pos
		}
		if m.DashboardKey != "" {
			h.keepDashboard(m)
		}
	}
	wake := h.notify
	h.notify = make(chan struct{})
	head := h.head
	var slow []*client
	for c := range h.clients {
		if head-c.cursor.Load() > uint64(len(h.window)) && c.slow.CompareAndSwap(false, true) {
			slow = append(slow, c)
		}
	}
	h.mu.Unlock()
	h.published.Add(uint64(len(msgs)))
	close(wake)
	for _, c := range slow {
		h.dropped.Add(1)
		// The client's writer may be blocked on a full socket: close from
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

// add registers c with its cursor at the newest message: it receives what
// is published from now on. It returns the position of the newest message
// published before, which is where the client stands.
func (h *Hub) add(c *client) schema.Position {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.cursor.Store(h.head)
	h.clients[c] = struct{}{}
	c.dash = h.dashboardsFor(c.principal.Load())
	return h.last
}

// Start sets the position the hub stands at before its first publish: the
// newest message already stored when a stream reader starts.
func (h *Hub) Start(pos schema.Position) {
	h.mu.Lock()
	if h.head == 0 {
		h.last = pos
	}
	h.mu.Unlock()
}

func (h *Hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

// next copies into buf the messages after cursor, up to len(buf). It
// returns how many, a channel closed at the next publish (for waiting when
// there are none), and lost=true when the cursor fell out of the window.
func (h *Hub) next(cursor uint64, buf []*schema.Message) (n int, wait <-chan struct{}, lost bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.head-cursor > uint64(len(h.window)) {
		return 0, nil, true
	}
	for s := cursor; s < h.head && n < len(buf); s++ {
		buf[n] = h.window[s%uint64(len(h.window))]
		n++
	}
	return n, h.notify, false
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
