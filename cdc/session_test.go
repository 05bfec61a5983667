package cdc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// fakeSink is the Sink of capture's session tests: it keeps what it
// stored, and can be made to fail or to wait. The database is real.
type fakeSink struct {
	mu     sync.Mutex
	stored []schema.Tx
	fail   error         // returned by Store while set
	gate   chan struct{} // while set, Store waits for it to close
	calls  int           // Store calls, failed ones included
	last   []schema.Tx   // the input of the last call
}

func (s *fakeSink) Store(ctx context.Context, txs []schema.Tx) error {
	s.mu.Lock()
	s.calls++
	s.last = append([]schema.Tx(nil), txs...)
	gate, fail := s.gate, s.fail
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stored = append(s.stored, txs...)
	return nil
}

// set changes the sink's behaviour for the next calls.
func (s *fakeSink) set(fail error, gate chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.gate = fail, gate
}

// snapshot returns the calls so far, the last call's input and what was
// stored.
func (s *fakeSink) snapshot() (calls int, last, stored []schema.Tx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.last, append([]schema.Tx(nil), s.stored...)
}

// storedIDs returns the id of every change stored, in order.
func storedIDs(t *testing.T, txs []schema.Tx) []int {
	t.Helper()
	var ids []int
	for _, tx := range txs {
		for _, ch := range tx.Changes {
			v, ok := ch.New.Get("id")
			if !ok {
				t.Fatalf("change %+v has no id", ch)
			}
			id, err := strconv.Atoi(string(v))
			if err != nil {
				t.Fatalf("id %s: %v", v, err)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

// sessionEnv is a Capture streaming the election tables of a real
// server into a fakeSink.
type sessionEnv struct {
	pg   *testenv.Postgres
	c    *Capture
	sink *fakeSink
}

func startSession(t *testing.T) *sessionEnv {
	t.Helper()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "INSERT INTO committee (id, code, name) VALUES (1, 'C1', 'One')")
	e := &sessionEnv{pg: pg, sink: &fakeSink{}}
	e.c = New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: checkTables(t, schema.DefaultTables),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		StatusInterval: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, e.sink)
	e.run(t)
	return e
}

// run runs the Capture until the test ends, and waits until it streams.
func (e *sessionEnv) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e.waitFor(t, "capture streams", func() bool { return e.c.Status().Streaming })
}

// waitFor polls cond until it holds, within a generous liveness bound.
func (e *sessionEnv) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s; capture status %+v", what, e.c.Status())
		}
	}
}

// insert commits one guarantee row with the given id.
func (e *sessionEnv) insert(t *testing.T, id int) {
	t.Helper()
	e.pg.Exec(t, "INSERT INTO guarantee (id, committee_id, user_id) VALUES ($1, 1, 1)", id)
}

// slotConfirmed is the slot's confirmed_flush_lsn as the server has it.
func (e *sessionEnv) slotConfirmed(t *testing.T) uint64 {
	t.Helper()
	return slotNow(t, e.pg.URL(), "walcast").ConfirmedFlushLSN
}

// neverConfirmed checks, over several status intervals, that neither
// capture nor the server count end as confirmed.
func (e *sessionEnv) neverConfirmed(t *testing.T, end uint64) {
	t.Helper()
	for i := 0; i < 5; i++ {
		if got := e.c.Status().Confirmed; got >= end {
			t.Fatalf("capture confirmed %d, at or past %d which the sink did not store", got, end)
		}
		if got := e.slotConfirmed(t); got >= end {
			t.Fatalf("the slot is confirmed up to %d, at or past %d which the sink did not store", got, end)
		}
		time.Sleep(e.c.cfg.StatusInterval) // let a wrong status update reach the server, if one is sent
	}
}

// TestSessionStoresInOrderAndConfirmsAfterTheSink runs capture's session
// loop against a fake sink: changes arrive in commit order, the slot is
// confirmed only once the sink stored a transaction, and a store that
// fails confirms nothing and is retried with the same changes.
func TestSessionStoresInOrderAndConfirmsAfterTheSink(t *testing.T) {
	t.Parallel()
	e := startSession(t)

	for id := 1; id <= 5; id++ {
		e.insert(t, id)
	}
	e.waitFor(t, "five transactions stored", func() bool { _, _, s := e.sink.snapshot(); return len(s) >= 5 })
	_, _, stored := e.sink.snapshot()
	if ids := storedIDs(t, stored); len(ids) != 5 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 || ids[3] != 4 || ids[4] != 5 {
		t.Fatalf("stored ids %v, want 1 to 5 in commit order", ids)
	}
	end := stored[4].EndLSN
	e.waitFor(t, "the slot confirmed after the sink stored", func() bool { return e.slotConfirmed(t) >= end })

	// A sink that has not returned yet: nothing of it is confirmed.
	gate := make(chan struct{})
	e.sink.set(nil, gate)
	e.insert(t, 6)
	var pending []schema.Tx
	e.waitFor(t, "the sink receives id 6", func() bool {
		_, last, _ := e.sink.snapshot()
		if ids := storedIDs(t, last); len(ids) == 1 && ids[0] == 6 {
			pending = last
			return true
		}
		return false
	})
	e.neverConfirmed(t, pending[0].EndLSN)
	e.sink.set(nil, nil)
	close(gate)
	e.waitFor(t, "the slot confirmed once the sink returned", func() bool { return e.slotConfirmed(t) >= pending[0].EndLSN })

	// A sink that fails: nothing is confirmed, the same changes are tried again.
	e.sink.set(errors.New("bus down"), nil)
	calls, _, _ := e.sink.snapshot()
	e.insert(t, 7)
	e.waitFor(t, "the failed store is retried", func() bool { c, _, _ := e.sink.snapshot(); return c >= calls+2 })
	_, last, _ := e.sink.snapshot()
	if ids := storedIDs(t, last); len(ids) != 1 || ids[0] != 7 {
		t.Fatalf("retried with ids %v, want [7]", ids)
	}
	e.neverConfirmed(t, last[0].EndLSN)
	e.sink.set(nil, nil)
	e.waitFor(t, "the slot confirmed once the store succeeded", func() bool { return e.slotConfirmed(t) >= last[0].EndLSN })
	_, _, stored = e.sink.snapshot()
	if ids := storedIDs(t, stored); len(ids) != 7 || ids[5] != 6 || ids[6] != 7 {
		t.Errorf("stored ids %v, want 1 to 7 once each", ids)
	}
}
