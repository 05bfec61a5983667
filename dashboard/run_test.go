package dashboard

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// rounds collects what each emit call stored: one slice of dashboard
// keys per round, and the newest message of each dashboard.
type rounds struct {
	ch chan []string

	mu   sync.Mutex
	json map[string]string
}

func (r *rounds) emit(ctx context.Context, msgs []schema.Message) error {
	var ks []string
	r.mu.Lock()
	for _, m := range msgs {
		ks = append(ks, m.DashboardKey)
		r.json[m.DashboardKey] = string(m.JSON)
	}
	r.mu.Unlock()
	slices.Sort(ks)
	r.ch <- ks
	return nil
}

// has reports whether the newest message of dashboard key holds part.
func (r *rounds) has(key, part string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Contains(r.json[key], part)
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
// committees of a guarantee that moved), with what the database holds.
func TestBuilderComputesNotedChangesInOneRound(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := pg.CreateDatabase(t, "dash")
	pg.ExecDB(t, db, schema.SQL)
	pg.ExecDB(t, db, `INSERT INTO committee (id, code, name) VALUES (1, 'c1', 'one'), (2, 'c2', 'two'), (3, 'c3', 'three');
		INSERT INTO guarantee (committee_id, user_id) VALUES (1, 10), (2, 20)`)
	b := newTestBuilder(t, db)
	r := &rounds{ch: make(chan []string, 16), json: map[string]string{}}
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
	pg.ExecDB(t, db, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (3, 1, 30)`)
	b.Note(&schema.Tx{Changes: []schema.Change{change("guarantee", schema.Insert, row(3, 30), nil)}})
	b.Note(&schema.Tx{Changes: []schema.Change{change("guarantee", schema.Update, row(2, 10), row(1, 10))}})
	b.Note(&schema.Tx{Changes: []schema.Change{change("attendance", schema.Insert, row(3, 30), nil)}})
	roundsBefore := b.Stats().Rounds
	ready.Store(true)
	got := r.next(t)
	if want := []string{"admin", "personal:10", "personal:30", "supervisor:1", "supervisor:2", "supervisor:3"}; !slices.Equal(got, want) {
		t.Fatalf("the round after three changes emitted %v, want %v", got, want)
	}
	if n := b.Stats().Rounds - roundsBefore; n != 1 {
		t.Errorf("three changes took %d rounds, want 1", n)
	}
	for _, want := range []struct{ key, part string }{
		{"supervisor:1", `"guarantees":{"strong":0,"medium":0,"weak":0,"total":0}`},
		{"supervisor:2", `"guarantees":{"strong":0,"medium":2,"weak":0,"total":2}`},
		{"supervisor:3", `"attendance":{"attended":1,`},
		{"personal:30", `"guarantees":{"strong":0,"medium":1,"weak":0,"total":1},"attendance_marked":1`},
	} {
		if !r.has(want.key, want.part) {
			t.Errorf("%s is %s, want %s in it", want.key, r.json[want.key], want.part)
		}
	}
}
