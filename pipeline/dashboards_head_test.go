package pipeline

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/walcast/walcast/schema"
)

// headGate is a fakeBus whose Head waits until released, as a round trip
// to Redis does, and says when it was asked.
type headGate struct {
	*fakeBus
	asked, release chan struct{}
}

func (g *headGate) Head(ctx context.Context) (schema.Position, error) {
	g.asked <- struct{}{}
	<-g.release
	return g.fakeBus.Head(ctx)
}

func newHeadGate() (*headGate, *Sink, *Dashboards) {
	g := &headGate{fakeBus: &fakeBus{}, asked: make(chan struct{}), release: make(chan struct{})}
	d := NewDashboards(g, &fakeBuilder{})
	return g, NewSink(router(), g, nil, d), d
}

// A change is stored while the dashboards read the bus's head: it waits
// behind a dashboard's append only, not behind that round trip too. The
// dashboard still follows the change it did not see in the head.
func TestChangeDoesNotWaitForTheDashboardsHeadRead(t *testing.T) {
	ctx := context.Background()
	g, s, d := newHeadGate()
	emit, _ := d.Loop(progress(0, true))
	if err := s.Store(ctx, []schema.Tx{tx(100, 0, 1, true)}); err != nil {
		t.Fatal(err)
	}
	emitted := make(chan error, 1)
	go func() { emitted <- emit(ctx, dashboard(1)) }()
	<-g.asked // the head read is in flight
	stored := make(chan error, 1)
	go func() { stored <- s.Store(ctx, []schema.Tx{tx(200, 0, 1, true)}) }()
	select {
	case err := <-stored:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the change's store waited for the dashboards' head read")
	}
	close(g.release)
	if err := <-emitted; err != nil {
		t.Fatalf("emit after a change stored during its head read: %v", err)
	}
	want := []string{"100-0", "200-0", "200-1d"}
	if got := g.stored(); !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}

// A new epoch while the dashboards read the head makes what they read
// worthless (ids start over): the round is not placed, and the next one
// follows the new epoch's entries.
func TestNewEpochDuringTheHeadReadDefersTheDashboards(t *testing.T) {
	ctx := context.Background()
	g, s, d := newHeadGate()
	emit, _ := d.Loop(progress(0, true))
	if err := s.Store(ctx, []schema.Tx{tx(500, 0, 1, true)}); err != nil {
		t.Fatal(err)
	}
	emitted := make(chan error, 1)
	go func() { emitted <- emit(ctx, dashboard(1)) }()
	<-g.asked
	if err := d.NewEpoch(func() error { g.head, g.msgs = schema.Position{}, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, []schema.Tx{tx(100, 0, 1, true)}); err != nil {
		t.Fatal(err)
	}
	g.release <- struct{}{}
	if err := <-emitted; !errors.Is(err, ErrNotPlaced) {
		t.Fatalf("emit across a new epoch = %v, want ErrNotPlaced", err)
	}
	close(g.release)
	go func() { <-g.asked }()
	if err := emit(ctx, dashboard(1)); err != nil {
		t.Fatalf("the next round: %v", err)
	}
	want := []string{"100-0", "100-1d"}
	if got := g.stored(); !reflect.DeepEqual(got, want) {
		t.Errorf("stored %v, want %v", got, want)
	}
}
