package broadcast

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/walcast/walcast/schema"
)

// ErrTooOld is returned when a resume position is older than the history
// kept: the client must refetch (resync_required).
var ErrTooOld = errors.New("position is older than the history kept")

// ErrUnknownPosition is returned for a resume position newer than anything
// stored, such as an id from before the history was lost.
var ErrUnknownPosition = errors.New("position is not in history")

// MemoryBus is the in-process bus: a ring buffer of the last messages for
// resume, publishing to a Hub as it stores. It serves `walcast run` without
// Redis; its history lasts as long as the process.
type MemoryBus struct {
	hub *Hub

	mu      sync.RWMutex
	ring    []*schema.Message // changes only: see Append
	start   int               // index of the oldest message in ring
	n       int               // messages in ring
	last    schema.Position   // newest stored position
	trimmed schema.Position   // newest position evicted from ring
	first   schema.Position   // the first position this bus stored
	// earlier: non-zero ids at or below it belong to an earlier epoch.
	earlier schema.Position
	origin  schema.Origin
	// state is the live state, updated under mu with the ring (see
	// memory_state.go).
	state *stateSet
	log   *slog.Logger
}

// NewMemoryBus returns a bus keeping the last history messages (at least 1)
// and delivering to hub (which may be nil).
func NewMemoryBus(history int, hub *Hub) *MemoryBus {
	if history < 1 {
		history = 1
	}
	if hub != nil {
		// The hub's window serves resumes within this bus's history, from
		// its start: this bus begins empty.
		hub.LimitResume(history)
		hub.Start(schema.Position{})
	}
	return &MemoryBus{hub: hub, ring: make([]*schema.Message, history), state: newStateSet(DefaultStateMaxRows)}
}

// Append stores msgs and publishes them. Messages at or before the newest
// stored position are already stored and are skipped, which makes
// re-reading WAL after a reconnect harmless.
//
// Dashboard messages are published and take their position, but are not
// kept for resume: a replay skips them (the newest of each is sent after
// it), so keeping them would only push changes out of history, and a
// burst of one per user would evict it all.
func (b *MemoryBus) Append(ctx context.Context, msgs []schema.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	fresh := make([]*schema.Message, 0, len(msgs))
	b.mu.Lock()
	for i := range msgs {
		m := &msgs[i]
		if !b.last.Less(m.Pos) {
			continue
		}
		if b.first.IsZero() {
			b.first = m.Pos
		}
		b.last = m.Pos
		fresh = append(fresh, m)
		if m.DashboardKey != "" {
			continue
		}
		if b.n == len(b.ring) {
			b.trimmed = b.ring[b.start].Pos
			b.ring[b.start] = nil
			b.start = (b.start + 1) % len(b.ring)
			b.n--
		}
		b.ring[(b.start+b.n)%len(b.ring)] = m
		b.n++
	}
	b.applyState(fresh)
	// Publishing under the lock keeps the hub's order identical to the
	// history's, which is what makes resume seamless.
	if b.hub != nil && len(fresh) > 0 {
		b.hub.Publish(fresh)
	}
	b.mu.Unlock()
	return nil
}

// Head returns the newest stored position.
func (b *MemoryBus) Head(ctx context.Context) (schema.Position, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.last, nil
}

// Since returns up to limit messages after pos, oldest first.
func (b *MemoryBus) Since(ctx context.Context, pos schema.Position, limit int) ([]*schema.Message, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !pos.IsZero() && !b.earlier.IsZero() && !b.earlier.Less(pos) {
		return nil, ErrTooOld // an id of an earlier epoch
	}
	if b.last.Less(pos) {
		return nil, ErrUnknownPosition
	}
	if pos.Less(b.trimmed) {
		return nil, ErrTooOld
	}
	if b.trimmed.IsZero() && !pos.IsZero() && pos.Less(b.first) {
		// Older than anything this process stored: earlier messages may
		// have been delivered by a previous process and are not here.
		return nil, ErrTooOld
	}
	return b.after(pos, limit), nil
}

// after returns up to limit messages of the ring after pos; under b.mu.
func (b *MemoryBus) after(pos schema.Position, limit int) []*schema.Message {
	// Binary search for the first message after pos.
	lo, hi := 0, b.n
	for lo < hi {
		mid := (lo + hi) / 2
		if pos.Less(b.at(mid).Pos) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	end := min(b.n, lo+limit)
	out := make([]*schema.Message, 0, end-lo)
	for i := lo; i < end; i++ {
		out = append(out, b.at(i))
	}
	return out
}

func (b *MemoryBus) at(i int) *schema.Message { return b.ring[(b.start+i)%len(b.ring)] }

// Lineage returns the origin recorded for this process's history and its
// newest position (see cdc.Lineage).
func (b *MemoryBus) Lineage(ctx context.Context) (schema.Origin, bool, schema.Position, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.origin, b.origin.SystemID != "", b.last, nil
}

// SetOrigin records the origin of the history.
func (b *MemoryBus) SetOrigin(ctx context.Context, o schema.Origin) error {
	b.mu.Lock()
	b.origin = o
	b.mu.Unlock()
	return nil
}

// NewEpoch discards the history and tells the hub's clients to resync:
// the ids that follow may be lower than the ones before.
func (b *MemoryBus) NewEpoch(ctx context.Context, o schema.Origin, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.earlier.Less(b.last) {
		b.earlier = b.last
	}
	clear(b.ring)
	b.start, b.n = 0, 0
	b.last, b.trimmed, b.first = schema.Position{}, schema.Position{}, schema.Position{}
	b.origin = o
	// The live state belongs to the old database.
	b.state = newStateSet(b.state.maxRows)
	if b.hub != nil {
		b.hub.NewEpoch("the server's history was discarded (new epoch): refetch, then follow", b.earlier)
	}
	return nil
}
