package cdc

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walcast/walcast/schema"
)

// preparingSink is a Sink that prepares ahead (a Preparer). The store of
// the transaction at failAt waits for gate, then fails once; every store
// call is logged by the commit LSNs it carried.
type preparingSink struct {
	failAt   uint64
	gate     chan struct{}
	prepared chan uint64              // each prepared transaction's commit LSN
	hold     map[uint64]chan struct{} // Prepare of these waits, once prepared is told

	mu     sync.Mutex
	calls  [][]uint64 // every store call, failed or not
	stored []uint64   // what was stored, in order
	failed bool
}

func (s *preparingSink) Store(ctx context.Context, txs []schema.Tx) error {
	return s.Prepare(txs)(ctx)
}

func (s *preparingSink) Prepare(txs []schema.Tx) func(context.Context) error {
	lsns := make([]uint64, len(txs))
	for i := range txs {
		lsns[i] = txs[i].CommitLSN
		s.prepared <- txs[i].CommitLSN
		if h := s.hold[lsns[i]]; h != nil {
			<-h
		}
	}
	return func(ctx context.Context) error {
		s.mu.Lock()
		s.calls = append(s.calls, lsns)
		fail := !s.failed && lsns[0] == s.failAt
		s.mu.Unlock()
		if fail {
			<-s.gate
			s.mu.Lock()
			s.failed = true
			s.mu.Unlock()
			return errors.New("bus down")
		}
		s.mu.Lock()
		s.stored = append(s.stored, lsns...)
		s.mu.Unlock()
		return nil
	}
}

func (s *preparingSink) snapshot() (calls [][]uint64, stored []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]uint64(nil), s.calls...), append([]uint64(nil), s.stored...)
}

// A store that fails while the batches after it are already prepared
// holds them back: nothing after it is stored or confirmed until it is
// stored again, then every transaction is stored once, in order.
func TestPublishFailedStoreHoldsBackPreparedBatches(t *testing.T) {
	hold200 := make(chan struct{})
	sink := &preparingSink{failAt: 200, gate: make(chan struct{}), prepared: make(chan uint64, 16),
		hold: map[uint64]chan struct{}{200: hold200}}
	c := New(Config{Logger: slog.New(slog.DiscardHandler), MaxBackoff: 50 * time.Millisecond}, sink)
	pending := make(chan *Piece, 4)
	var outstanding atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publish(context.Background(), pending, &outstanding)
	}()
	queue := func(lsn uint64) {
		outstanding.Add(1)
		pending <- &Piece{Tx: schema.Tx{CommitLSN: lsn, EndLSN: lsn + 8}, Commit: true}
	}
	prepared := func(lsn uint64) {
		if got := <-sink.prepared; got != lsn {
			t.Fatalf("prepared %d, want %d", got, lsn)
		}
	}
	queue(100) // idle: publish stores it itself
	prepared(100)
	waitFor(t, "the first transaction confirmed", func() bool { return c.confirmed.Load() == 108 })
	queue(200)
	prepared(200)
	queue(300) // queued while 200 is prepared: 200 goes to the storer, whose store waits for the gate and fails
	close(hold200)
	prepared(300) // prepared while 200 is being stored
	queue(400)    // queued: gathered once 300 is handed over
	waitFor(t, "the store of 200", func() bool { calls, _ := sink.snapshot(); return len(calls) >= 2 })
	calls, _ := sink.snapshot()
	if want := [][]uint64{{100}, {200}}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("store calls %v before 200 failed, want %v", calls, want)
	}
	if got := c.confirmed.Load(); got != 108 {
		t.Fatalf("confirmed %d while 200 is in flight, want 108", got)
	}
	close(sink.gate) // 200 fails, and is retried
	prepared(400)
	close(pending)
	<-done
	calls, stored := sink.snapshot()
	if want := []uint64{100, 200, 300, 400}; !reflect.DeepEqual(stored, want) {
		t.Errorf("stored %v, want %v: each once, in order", stored, want)
	}
	// The retry of 200 comes before any store of what followed it.
	if len(calls) < 3 || !reflect.DeepEqual(calls[1], []uint64{200}) || !reflect.DeepEqual(calls[2], []uint64{200}) {
		t.Errorf("store calls %v: want 200 failed, then 200 again before 300", calls)
	}
	if got := c.confirmed.Load(); got != 408 {
		t.Errorf("confirmed %d after all stored, want 408", got)
	}
	if n := outstanding.Load(); n != 0 {
		t.Errorf("%d pieces outstanding after all stored, want 0", n)
	}
}

// Shutdown that gives up on a store that keeps failing returns without
// confirming it or anything prepared after it.
func TestPublishGivesUpWithoutConfirmingPastAFailure(t *testing.T) {
	sink := &preparingSink{failAt: 200, gate: make(chan struct{}), prepared: make(chan uint64, 16)}
	close(sink.gate)
	c := New(Config{Logger: slog.New(slog.DiscardHandler), MaxBackoff: 20 * time.Millisecond}, alwaysFailing{sink})
	pending := make(chan *Piece, 4)
	var outstanding atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	for _, lsn := range []uint64{200, 300} {
		outstanding.Add(1)
		pending <- &Piece{Tx: schema.Tx{CommitLSN: lsn, EndLSN: lsn + 8}, Commit: true}
	}
	close(pending)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publish(ctx, pending, &outstanding)
	}()
	time.Sleep(100 * time.Millisecond) // a few failed attempts
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publish did not return after shutdown gave up")
	}
	if got := c.confirmed.Load(); got != 0 {
		t.Errorf("confirmed %d, want nothing", got)
	}
	if _, stored := sink.snapshot(); len(stored) != 0 {
		t.Errorf("stored %v, want nothing", stored)
	}
}

// alwaysFailing fails every store.
type alwaysFailing struct{ s *preparingSink }

func (a alwaysFailing) Store(ctx context.Context, txs []schema.Tx) error {
	return errors.New("bus down")
}

func (a alwaysFailing) Prepare(txs []schema.Tx) func(context.Context) error {
	return func(context.Context) error { return errors.New("bus down") }
}

// waitFor polls cond until it holds, failing t after a generous limit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
