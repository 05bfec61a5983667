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
	rd := testenv.StartRedis(t)
	const history = 300
	bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: history, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	p := func(l, s uint64) schema.Position { return schema.Position{LSN: l, Seq: s} }
	change := func(pos schema.Position) schema.Message {
		return schema.Message{Pos: pos, Type: schema.TypeGuarantee, JSON: []byte(`{}`)}
	}
	var changes []schema.Position
	for i := range uint64(100) {
		changes = append(changes, p(10+i, 0))
		if err := bus.Append(ctx, []schema.Message{change(p(10+i, 0))}); err != nil {
			t.Fatal(err)
		}
	}
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
	for i := range uint64(100) {
		changes = append(changes, p(200+i, 0))
		if err := bus.Append(ctx, []schema.Message{change(p(200+i, 0))}); err != nil {
			t.Fatal(err)
		}
	}
	// Every change after the first is still there, in order.
	var got []schema.Position
	pos := changes[0]
	for {
		page, err := bus.Since(ctx, pos, 1000)
		if err != nil {
			t.Fatalf("Since(%s) after a burst of 1,000 dashboards with --history %d: %v", pos, history, err)
		}
		for _, m := range page {
			if m.DashboardKey == "" {
				got = append(got, m.Pos)
			}
			pos = m.Pos
		}
		if len(page) < 1000 {
			break
		}
	}
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
	for i := range uint64(2 * history) {
		if err := bus.Append(ctx, []schema.Message{change(p(1000+i, 0))}); err != nil {
			t.Fatal(err)
		}
	}
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
