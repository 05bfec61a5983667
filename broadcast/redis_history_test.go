package broadcast

import (
	"context"
	"errors"
	"testing"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// since=0-0 means "the whole history": once Redis trimmed the stream it
// cannot be given, and the answer is ErrTooOld, not what is left. Ids of
// an earlier epoch are too old whatever the stream holds now.
func TestRedisSinceTheBeginning(t *testing.T) {
	ctx := context.Background()
	bus := newTestRedisBus(t, testenv.StartRedis(t).URL(), 100)
	p := func(l uint64) schema.Position { return schema.Position{LSN: l} }
	var ps []schema.Position
	for l := uint64(1); l <= 50; l++ {
		ps = append(ps, p(l))
	}
	if err := bus.Append(ctx, msgs(ps...)); err != nil {
		t.Fatal(err)
	}
	if got, err := bus.Since(ctx, schema.Position{}, 1000); err != nil || len(got) != 50 {
		t.Fatalf("Since(0-0) before any trim: %d messages, %v; want all 50", len(got), err)
	}
	ps = ps[:0]
	for l := uint64(51); l <= 2000; l++ {
		ps = append(ps, p(l))
	}
	if err := bus.Append(ctx, msgs(ps...)); err != nil {
		t.Fatal(err)
	}
	if got, err := bus.Since(ctx, schema.Position{}, 1000); !errors.Is(err, ErrTooOld) {
		t.Fatalf("Since(0-0) after a trim: %d messages, %v; want ErrTooOld", len(got), err)
	}

	if err := bus.NewEpoch(ctx, schema.Origin{SystemID: "1", Timeline: 1, Slot: "walcast"}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := bus.Append(ctx, msgs(p(5), p(6))); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Since(ctx, p(5), 1000); !errors.Is(err, ErrTooOld) {
		t.Errorf("Since(an id of the earlier epoch) = %v, want ErrTooOld", err)
	}
	if got, err := bus.Since(ctx, schema.Position{}, 1000); err != nil || len(got) != 2 || got[0].Pos != p(5) {
		t.Errorf("Since(0-0) in the new epoch = %v, %v; want its 2 messages", got, err)
	}
}
