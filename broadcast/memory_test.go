package broadcast

import (
	"context"
	"errors"
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
