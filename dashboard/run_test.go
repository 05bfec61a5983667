package dashboard

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// rounds collects what each emit call stored: one slice of dashboard
// keys per round.
type rounds struct {
	ch chan []string
}

func (r *rounds) emit(ctx context.Context, msgs []schema.Message) error {
	var ks []string
	for _, m := range msgs {
		ks = append(ks, m.DashboardKey)
	}
	slices.Sort(ks)
	r.ch <- ks
	return nil
}

// next returns the keys of the next round, failing after a generous
// liveness limit.
func (r *rounds) next(t *testing.T) []string {
	t.Helper()
	select {
	case ks := <-r.ch:
		return ks
	case <-time.After(20 * time.Second):
		t.Fatal("no dashboard round within 20 s")
	}
	return nil
}

// Against a real database: the builder computes every dashboard at start;
// changes noted while it may not run (readiness withheld) are computed in
// one round, which emits exactly the dashboards they touch (both
// committees of a guarantee that moved).
func TestBuilderComputesNotedChangesInOneRound(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.CreateDatabase(t, "dash")
	pg.ExecDB(t, db, schema.SQL)
	pg.ExecDB(t, db, `INSERT INTO committee (id, code, name) VALUES (1, 'c1', 'one'), (2, 'c2', 'two'), (3, 'c3', 'three');
		INSERT INTO guarantee (committee_id, user_id) VALUES (1, 10), (2, 20)`)
	b := newTestBuilder(t, db)
	r := &rounds{ch: make(chan []string, 16)}
	var ready atomic.Bool
	ready.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = b.Run(ctx, r.emit, ready.Load) }()
	defer func() { cancel(); wg.Wait() }()

	start := r.next(t)
	if want := []string{"admin", "personal:10", "personal:20", "supervisor:1", "supervisor:2", "supervisor:3"}; !slices.Equal(start, want) {
		t.Fatalf("the first round emitted %v, want %v", start, want)
	}

	ready.Store(false)
	pg.ExecDB(t, db, `INSERT INTO guarantee (committee_id, user_id) VALUES (3, 30)`)
	pg.ExecDB(t, db, `UPDATE guarantee SET committee_id = 2 WHERE user_id = 10`)
	b.Note(&schema.Tx{Changes: []schema.Change{change("guarantee", schema.Insert, row(3, 30), nil)}})
	b.Note(&schema.Tx{Changes: []schema.Change{change("guarantee", schema.Update, row(2, 10), row(1, 10))}})
	roundsBefore := b.Stats().Rounds
	ready.Store(true)
	got := r.next(t)
	if want := []string{"admin", "personal:10", "personal:30", "supervisor:1", "supervisor:2", "supervisor:3"}; !slices.Equal(got, want) {
		t.Fatalf("the round after two changes emitted %v, want %v", got, want)
	}
	if n := b.Stats().Rounds - roundsBefore; n != 1 {
		t.Errorf("two changes took %d rounds, want 1", n)
	}
}
