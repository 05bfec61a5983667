package pipeline

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/walcast/walcast/schema"
)

func newDashboards() (*fakeBus, *fakeBuilder, *Sink, *Dashboards) {
	bus, b := &fakeBus{}, &fakeBuilder{}
	d := NewDashboards(bus, b)
	return bus, b, NewSink(router(), bus, nil, d), d
}

// A dashboard takes the position right after the newest entry, in its
// LSN, and the next transaction's changes still sort after it.
func TestDashboardFollowsACompleteTransaction(t *testing.T) {
	ctx := context.Background()
	bus, b, s, d := newDashboards()
	emit, ready := d.Loop(progress(0, true))
	if !ready() {
		t.Fatal("an empty bus is not ready for dashboards")
	}
	if err := emit(ctx, dashboard(1)); err != nil {
		t.Fatalf("on an empty bus: %v", err)
	}
	if err := s.Store(ctx, []schema.Tx{tx(100, 0, 2, true)}); err != nil {
		t.Fatal(err)
	}
	if err := emit(ctx, dashboard(2)); err != nil {
		t.Fatalf("after a complete transaction: %v", err)
	}
	if err := s.Store(ctx, []schema.Tx{tx(200, 0, 1, true)}); err != nil {
		t.Fatalf("a change after a dashboard: %v", err)
	}
	want := []string{"0-1d", "100-0", "100-1", "100-2d", "100-3d", "200-0"}
	if got := bus.stored(); !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
	if b.count() != 2 {
		t.Errorf("builder noted %d transactions, want 2", b.count())
	}
	if err := emit(ctx, nil); err != nil {
		t.Errorf("nothing to emit: %v", err)
	}
}

// In the middle of a transaction stored in pieces a dashboard waits: its
// later pieces take the ordinals after the top.
func TestDashboardWaitsInsideATransactionStoredInPieces(t *testing.T) {
	ctx := context.Background()
	bus, _, s, d := newDashboards()
	emit, ready := d.Loop(progress(0, true))
	if err := s.Store(ctx, []schema.Tx{tx(100, 0, 2, false)}); err != nil {
		t.Fatal(err)
	}
	if ready() {
		t.Error("ready in the middle of a transaction")
	}
	if err := emit(ctx, dashboard(1)); !errors.Is(err, ErrNotPlaced) {
		t.Fatalf("emit in the middle of a transaction = %v, want ErrNotPlaced", err)
	}
	if err := s.Store(ctx, []schema.Tx{tx(100, 2, 2, true)}); err != nil {
		t.Fatalf("the last piece: %v", err)
	}
	if !ready() {
		t.Error("not ready after the last piece")
	}
	if err := emit(ctx, dashboard(1)); err != nil {
		t.Fatal(err)
	}
	want := []string{"100-0", "100-1", "100-2", "100-3", "100-4d"}
	if got := bus.stored(); !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}

// After a restart the bus holds what another process stored: the head is
// read, and a top below the slot's confirmed position is complete.
func TestDashboardAfterARestartFollowsTheBusHead(t *testing.T) {
	ctx := context.Background()
	bus, _, _, d := newDashboards()
	bus.head = schema.Position{LSN: 500, Seq: 3}

	emit, _ := d.Loop(progress(0, true))
	if err := emit(ctx, dashboard(1)); !errors.Is(err, ErrNotPlaced) {
		t.Fatalf("head not known complete: emit = %v, want ErrNotPlaced", err)
	}
	emit, ready := d.Loop(progress(600, true))
	if !ready() {
		t.Error("not ready with the head below the confirmed position")
	}
	if err := emit(ctx, dashboard(1)); err != nil {
		t.Fatal(err)
	}
	if got, want := bus.stored(), []string{"500-4d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}

// A standby computes nothing.
func TestDashboardsWaitForStreaming(t *testing.T) {
	_, _, _, d := newDashboards()
	if _, ready := d.Loop(progress(0, false)); ready() {
		t.Error("ready while capture is not streaming")
	}
}

// A new epoch forgets the bus's top: ids start over.
func TestNewEpochResetsTheTop(t *testing.T) {
	ctx := context.Background()
	bus, _, s, d := newDashboards()
	if err := s.Store(ctx, []schema.Tx{tx(100, 0, 1, false)}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("refused")
	if err := d.NewEpoch(func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("NewEpoch = %v, want %v", err, boom)
	}
	emit, ready := d.Loop(progress(0, true))
	if ready() {
		t.Error("a failed new epoch changed what the dashboards know")
	}
	if err := d.NewEpoch(func() error { bus.head, bus.msgs = schema.Position{}, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := emit(ctx, dashboard(1)); err != nil {
		t.Fatalf("after a new epoch: %v", err)
	}
	if got, want := bus.stored(), []string{"0-1d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
	var nilDash *Dashboards
	ran := false
	if err := nilDash.NewEpoch(func() error { ran = true; return nil }); err != nil || !ran {
		t.Errorf("dashboards off: NewEpoch = %v, ran %v", err, ran)
	}
}

// Changes and dashboards appended at once never break increasing ids: the
// fake bus refuses a position that does not increase, as Redis does.
func TestConcurrentChangesAndDashboardsKeepIdsIncreasing(t *testing.T) {
	ctx := context.Background()
	bus, _, s, d := newDashboards()
	emit, _ := d.Loop(progress(0, true))
	var wg sync.WaitGroup
	wg.Add(2)
	errs := make(chan error, 2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			lsn := uint64(100 * (i + 1))
			// Every other transaction arrives in two pieces.
			if i%2 == 1 {
				if err := s.Store(ctx, []schema.Tx{tx(lsn, 0, 2, false)}); err != nil {
					errs <- err
					return
				}
			}
			if err := s.Store(ctx, []schema.Tx{tx(lsn, 2, 2, true)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 400 {
			if err := emit(ctx, dashboard(2)); err != nil && !errors.Is(err, ErrNotPlaced) {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(bus.stored()); n < 600 {
		t.Errorf("%d messages stored, want at least the 600 changes", n)
	}
}
