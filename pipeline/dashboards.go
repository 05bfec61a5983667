package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/walcast/walcast/schema"
)

// DashboardBus is what dashboards need of the bus: the append the changes
// use, and its newest stored position, which after a restart or a standby
// takeover holds what other processes stored.
type DashboardBus interface {
	Bus
	Head(ctx context.Context) (schema.Position, error)
}

// Noter is what the pipeline needs of the dashboard builder: to be told of
// each stored transaction, so that it recomputes what the transaction
// touched (the builder coalesces them into rounds).
type Noter interface {
	Note(tx *schema.Tx)
}

// ErrNotPlaced is returned by the dashboards' emitter when the bus's newest
// entry may be inside a transaction still being stored: the dashboards wait
// for the next round.
var ErrNotPlaced = errors.New("the bus's newest entry may be inside a transaction still being stored")

// Dashboards places the dashboard builder's messages on the bus, through
// the same serialized path as the changes, at positions that keep the
// stream's ids increasing.
//
// A dashboard message takes the position right after the newest entry on
// the bus, in the same LSN: (L, top.Seq+1). Every transaction not stored
// yet has a commit LSN above L, so its changes still sort after it, and
// the bus never refuses a change because of a dashboard. That holds only
// when the entry at L belongs to a transaction stored whole: never in the
// middle of a large transaction stored in pieces, whose later pieces take
// the ordinals after it. So a dashboard is placed only when the top of the
// bus is a complete transaction: the last one this process stored ended
// with its commit, or the top's LSN is below the slot's confirmed position
// (everything before it is stored whole: after a restart, before the WAL
// re-read catches up). Otherwise it waits for the next round.
type Dashboards struct {
	bus     DashboardBus
	builder Noter

	mu         sync.Mutex // serializes change and dashboard appends
	top        schema.Position
	lastChange schema.Position // the newest change this process stored
	complete   bool            // the last transaction stored ended with its commit
	// epochs counts NewEpoch calls: a head read before one belongs to the
	// discarded history.
	epochs uint64
}

// NewDashboards returns the placement of builder's messages on bus.
func NewDashboards(bus DashboardBus, builder Noter) *Dashboards {
	return &Dashboards{bus: bus, builder: builder}
}

// Progress reports capture's progress: the slot's confirmed position (0
// before capture has one) and whether it is streaming (a standby is not,
// and computes no dashboard).
type Progress func() (confirmed uint64, streaming bool)

// Loop returns the emitter and the readiness test the builder's loop
// takes (dashboard.Builder.Run), gated on capture's progress.
func (d *Dashboards) Loop(progress Progress) (emit func(context.Context, []schema.Message) error, ready func() bool) {
	confirmed := func() uint64 { c, _ := progress(); return c }
	emit = func(ctx context.Context, msgs []schema.Message) error { return d.emit(ctx, msgs, confirmed) }
	ready = func() bool {
		if _, streaming := progress(); !streaming {
			return false
		}
		return d.ready(confirmed)
	}
	return emit, ready
}

// storing runs store, the append of txs's changes, with the dashboards'
// appends held off, and notes txs once they are stored.
func (d *Dashboards) storing(txs []schema.Tx, store func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := store(); err != nil {
		return err
	}
	for i := range txs {
		tx := &txs[i]
		if n := len(tx.Changes); n > 0 {
			d.lastChange = tx.Changes[n-1].Pos
			if d.top.Less(d.lastChange) {
				d.top = d.lastChange
			}
		}
		// Only a transaction's last piece carries its end position.
		d.complete = tx.EndLSN != 0
		d.builder.Note(tx)
	}
	return nil
}

// NewEpoch runs start, which discards the bus's history, with appends held
// off, and then forgets what it knew of the bus's newest position: ids
// start over. A nil d only runs start.
func (d *Dashboards) NewEpoch(start func() error) error {
	if d == nil {
		return start()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := start(); err != nil {
		return err
	}
	d.top, d.lastChange, d.complete = schema.Position{}, schema.Position{}, false
	d.epochs++
	return nil
}

// emit appends dashboard messages after the newest entry on the bus.
//
// The bus's head is read before taking the lock, so that a change waits
// behind a dashboard's append only, not behind the head's round trip too.
// That is safe: whatever this process stores after the read is in d.top,
// which the dashboards follow when it is newer; other processes' entries
// are what the head is read for, and they could land after the read with
// or without the lock held, which is process-local. A new epoch in
// between makes the read worthless (its ids start over): the round waits.
func (d *Dashboards) emit(ctx context.Context, msgs []schema.Message, confirmed func() uint64) error {
	if len(msgs) == 0 {
		return nil
	}
	d.mu.Lock()
	epochs := d.epochs
	d.mu.Unlock()
	// Read the bus's head each time: after a restart or a standby
	// takeover it holds what other processes stored.
	head, err := d.bus.Head(ctx)
	if err != nil {
		return fmt.Errorf("read the bus head: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.epochs != epochs {
		return ErrNotPlaced
	}
	top := d.top
	if top.Less(head) {
		top = head
	}
	if !d.placeable(top, confirmed) {
		return ErrNotPlaced
	}
	for i := range msgs {
		top.Seq++
		msgs[i].Pos = top
	}
	if err := d.bus.Append(ctx, msgs); err != nil {
		return err
	}
	d.top = top
	return nil
}

// placeable reports whether a dashboard may follow top; mu is held.
func (d *Dashboards) placeable(top schema.Position, confirmed func() uint64) bool {
	return top.IsZero() ||
		top.LSN < confirmed() ||
		(d.complete && top.LSN == d.lastChange.LSN)
}

// ready reports whether dashboards can be stored now, as far as this
// process knows (emit checks the bus's head too), so that none is
// computed in vain in the middle of a large transaction.
func (d *Dashboards) ready(confirmed func() uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.placeable(d.top, confirmed)
}
