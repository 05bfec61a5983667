package broadcast

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/walcast/walcast/schema"
)

func msgs(positions ...schema.Position) []schema.Message {
	out := make([]schema.Message, len(positions))
	for i, p := range positions {
		out[i] = schema.Message{Pos: p, Type: schema.TypeGuarantee, JSON: []byte(`{}`)}
	}
	return out
}

func TestMemoryBusResume(t *testing.T) {
	ctx := context.Background()
	bus := NewMemoryBus(3, nil)
	p := func(l, s uint64) schema.Position { return schema.Position{LSN: l, Seq: s} }
	bus.Append(ctx, msgs(p(10, 0), p(10, 1), p(20, 0)))
	bus.Append(ctx, msgs(p(10, 1), p(20, 0))) // re-read after a reconnect: skipped

	got, err := bus.Since(ctx, p(10, 0), 100)
	if err != nil || len(got) != 2 || got[0].Pos != p(10, 1) {
		t.Fatalf("Since(10-0) = %v, %v", got, err)
	}
	if got, _ := bus.Since(ctx, p(20, 0), 100); len(got) != 0 {
		t.Errorf("Since(head) = %v, want nothing", got)
	}
	bus.Append(ctx, msgs(p(30, 0))) // evicts 10-0
	if _, err := bus.Since(ctx, schema.Position{}, 100); !errors.Is(err, ErrTooOld) {
		t.Errorf("Since(0) after eviction: %v, want ErrTooOld", err)
	}
	if _, err := bus.Since(ctx, p(5, 0), 100); !errors.Is(err, ErrTooOld) {
		t.Errorf("Since(older than history): %v, want ErrTooOld", err)
	}
	if got, err := bus.Since(ctx, p(10, 0), 100); err != nil || len(got) != 3 {
		t.Errorf("Since(newest evicted) = %d, %v; want the 3 kept", len(got), err)
	}
	if _, err := bus.Since(ctx, p(99, 0), 100); !errors.Is(err, ErrUnknownPosition) {
		t.Errorf("Since(future) = %v, want ErrUnknownPosition", err)
	}
	if head, _ := bus.Head(ctx); head != p(30, 0) {
		t.Errorf("head = %v", head)
	}
}

// A new process's bus cannot vouch for messages a previous process
// delivered: resuming from before its first message is too old.
func TestMemoryBusAfterRestart(t *testing.T) {
	ctx := context.Background()
	bus := NewMemoryBus(10, nil)
	bus.Append(ctx, msgs(schema.Position{LSN: 50}))
	if _, err := bus.Since(ctx, schema.Position{LSN: 40}, 10); !errors.Is(err, ErrTooOld) {
		t.Errorf("err = %v, want ErrTooOld", err)
	}
}

// Dashboard messages are published but not kept for resume: a burst of
// them, far larger than the history, evicts no change.
func TestMemoryBusKeepsDashboardsOutOfHistory(t *testing.T) {
	ctx := context.Background()
	hub := NewHub(0)
	bus := NewMemoryBus(10, hub)
	p := func(l, s uint64) schema.Position { return schema.Position{LSN: l, Seq: s} }
	bus.Append(ctx, msgs(p(10, 0), p(10, 1)))
	dash := make([]schema.Message, 1000)
	for i := range dash {
		dash[i] = schema.Message{Pos: p(10, uint64(2+i)), Type: schema.TypeDashboard, DashboardKey: fmt.Sprintf("personal:%d", i), JSON: []byte(`{}`)}
	}
	bus.Append(ctx, dash)
	bus.Append(ctx, msgs(p(20, 0)))
	got, err := bus.Since(ctx, p(10, 0), 100)
	if err != nil || len(got) != 2 || got[0].Pos != p(10, 1) || got[1].Pos != p(20, 0) {
		t.Fatalf("Since(10-0) after 1,000 dashboards = %v, %v; want the changes 10-1 and 20-0", got, err)
	}
	// The position of a dashboard (a welcome may name one) resumes.
	if got, err := bus.Since(ctx, p(10, 500), 100); err != nil || len(got) != 1 {
		t.Fatalf("Since(a dashboard's position) = %v, %v; want 20-0", got, err)
	}
	if head, _ := bus.Head(ctx); head != p(20, 0) {
		t.Errorf("head = %v", head)
	}
	if n := len(hub.Dashboards()); n != 1000 {
		t.Errorf("hub keeps %d dashboards, want 1000", n)
	}
	// Only dashboards stored yet: resuming from 0-0 is not too old.
	fresh := NewMemoryBus(10, nil)
	fresh.Append(ctx, dash[:3])
	if got, err := fresh.Since(ctx, schema.Position{}, 100); err != nil || len(got) != 0 {
		t.Errorf("Since(0-0) with only dashboards stored = %v, %v; want nothing, no error", got, err)
	}
}
