package broadcast

import (
	"context"
	"fmt"
	"testing"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// The stream keeps --history changes however many dashboards arrive
// between them: a burst of dashboards many times the history (one per
// user after a TRUNCATE) leaves every change resumable, and the stream
// stays bounded.
func TestRedisTrimKeepsChangesOutOfDashboardBursts(t *testing.T) {
	ctx := context.Background()
	const history = 300
	bus := newTestRedisBus(t, testenv.StartRedis(t).URL(), history)
	p := func(l, s uint64) schema.Position { return schema.Position{LSN: l, Seq: s} }
	changes := appendOneByOne(t, bus, lsns(10, 109))
	// A burst: 1,000 dashboards, three times the history, in rounds.
	for round := range uint64(10) {
		batch := make([]schema.Message, 100)
		for i := range batch {
			n := round*100 + uint64(i)
			batch[i] = schema.Message{Pos: p(109, 1+n), Type: schema.TypeDashboard, DashboardKey: fmt.Sprintf("personal:%d", n), Owner: int64(n), HasOwner: true, JSON: []byte(`{}`)}
		}
		if err := bus.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	changes = append(changes, appendOneByOne(t, bus, lsns(200, 299))...)
	// Every change after the first is still there, in order.
	got := changesSince(t, bus, changes[0])
	if len(got) != len(changes)-1 {
		t.Fatalf("history holds %d of the %d changes after the first", len(got), len(changes)-1)
	}
	for i, g := range got {
		if g != changes[i+1] {
			t.Fatalf("change %d is %s, want %s", i, g, changes[i+1])
		}
	}
	// Bounded: further changes age the dashboards out, and the stream
	// returns to about --history entries.
	appendOneByOne(t, bus, lsns(1000, 1000+2*history-1))
	n, err := bus.rdb.XLen(ctx, bus.key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := bus.rdb.LLen(ctx, bus.dashboardIDsKey()).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d more changes: %d entries, %d dashboard ids listed", 2*history, n, ids)
	if n > 2*history || ids != 0 {
		t.Errorf("stream holds %d entries and lists %d dashboards, want about %d and 0", n, ids, history)
	}
}

// appendOneByOne appends a change at each of ps, one Append each, and
// returns ps.
func appendOneByOne(t *testing.T, bus *RedisBus, ps []schema.Position) []schema.Position {
	t.Helper()
	for _, pos := range ps {
		if err := bus.Append(context.Background(), msgs(pos)); err != nil {
			t.Fatal(err)
		}
	}
	return ps
}

// changesSince pages through the stream after pos and returns the
// positions of the changes (not dashboards) it holds, in order.
func changesSince(t *testing.T, bus *RedisBus, pos schema.Position) []schema.Position {
	t.Helper()
	var got []schema.Position
	for {
		page, err := bus.Since(context.Background(), pos, 1000)
		if err != nil {
			t.Fatalf("Since(%s): %v", pos, err)
		}
		for _, m := range page {
			if m.DashboardKey == "" {
				got = append(got, m.Pos)
			}
			pos = m.Pos
		}
		if len(page) < 1000 {
			return got
		}
	}
}

// Changes re-read from WAL after a reconnection are appended again below
// the stream's top, and skipped: that must not lower what the bus takes
// for the stream's reach (the top key), or the next append would see the
// newest entry stored as lost and begin a new epoch.
func TestRedisReappendBelowTheTopIsNoLoss(t *testing.T) {
	ctx := context.Background()
	rd := testenv.StartRedis(t)
	bus := newTestRedisBus(t, rd.URL(), 1000)
	appendOneByOne(t, bus, lsns(10, 20))
	// The WAL re-read: older changes, in one append.
	if err := bus.Append(ctx, msgs(lsns(12, 15)...)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Append(ctx, msgs(lsns(21, 22)...)); err != nil {
		t.Fatalf("append after a re-read: %v", err)
	}
	ep, _, err := bus.epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ep != "" {
		t.Errorf("epoch %q after a re-read, want none begun", ep)
	}
	if n := rd.Do(t, "XLEN", bus.key); n != int64(13) {
		t.Errorf("stream holds %v entries, want 13", n)
	}
}
