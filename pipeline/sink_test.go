package pipeline

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/walcast/walcast/schema"
)

// Several transactions are stored in one append, in order, and reported
// once stored.
func TestSinkStoresTransactionsInOneAppend(t *testing.T) {
	bus, obs := &fakeBus{}, &fakeObserver{}
	s := NewSink(router(), bus, obs, nil)
	txs := []schema.Tx{tx(100, 0, 2, true), tx(200, 0, 1, true), {CommitLSN: 300, EndLSN: 308}}
	if err := s.Store(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if want := []string{"100-0", "100-1", "200-0"}; !reflect.DeepEqual(bus.stored(), want) {
		t.Errorf("stored %v, want %v", bus.stored(), want)
	}
	if bus.appends != 1 {
		t.Errorf("%d appends, want 1", bus.appends)
	}
	if obs.stored != 3 {
		t.Errorf("observer told of %d transactions, want 3", obs.stored)
	}
	// Nothing to store: no append at all.
	if err := s.Store(context.Background(), []schema.Tx{{CommitLSN: 400, EndLSN: 408}}); err != nil || bus.appends != 1 {
		t.Errorf("empty transaction: err %v, %d appends, want none", err, bus.appends)
	}
}

// A failed append reports nothing and is retried with the same input; the
// messages sent to admins only are counted once, when stored.
func TestSinkReportsOnlyWhatIsStored(t *testing.T) {
	boom := errors.New("bus down")
	bus, obs := &fakeBus{fail: boom}, &fakeObserver{}
	b := &fakeBuilder{}
	s := NewSink(router(), bus, obs, NewDashboards(bus, b))
	txs := []schema.Tx{tx(100, 0, 1, true)}
	txs[0].Changes[0].New[1].Value = []byte(`"3.5"`) // not an exact integer: admins only
	if err := s.Store(context.Background(), txs); !errors.Is(err, boom) {
		t.Fatalf("Store = %v, want %v", err, boom)
	}
	if obs.stored != 0 || len(obs.unroutable) != 0 || b.count() != 0 {
		t.Fatalf("after a failed append: observer %+v, %d noted, want nothing", obs, b.count())
	}
	if err := s.Store(context.Background(), txs); err != nil {
		t.Fatal(err)
	}
	if want := []string{"public.guarantee:" + schema.UnroutableCommittee}; !reflect.DeepEqual(obs.unroutable, want) {
		t.Errorf("unroutable %v, want %v", obs.unroutable, want)
	}
	if obs.stored != 1 || b.count() != 1 {
		t.Errorf("stored %d, noted %d, want 1 and 1", obs.stored, b.count())
	}
}
