package cdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// TestStartStopsOnCheckFirstProblem: capture stops on the problem walcast
// check reports first, in the same words and with the same fix.
func TestStartStopsOnCheckFirstProblem(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "ALTER TABLE attendance REPLICA IDENTITY NOTHING")
	tables := checkTables(t, schema.DefaultTables)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var first *Finding
	for _, f := range Check(ctx, CheckConfig{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: tables}) {
		if f.Level == LevelProblem {
			first = &f
			break
		}
	}
	if first == nil {
		t.Fatal("walcast check found no problem")
	}
	c := New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: tables,
		Logger: slog.New(slog.DiscardHandler)}, &fakeSink{})
	err := c.Run(ctx)
	var se *SetupError
	if !errors.As(err, &se) {
		t.Fatalf("Run returned %v, want a SetupError", err)
	}
	if se.Problem != first.Detail || se.Fix != first.Fix {
		t.Errorf("start-up says %q (fix %q); walcast check says %q (fix %q)", se.Problem, se.Fix, first.Detail, first.Fix)
	}
}

// warnCounter is a slog handler that counts the warnings whose message
// holds text.
type warnCounter struct {
	text string
	n    atomic.Int32
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnCounter) WithGroup(string) slog.Handler            { return w }

func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && strings.Contains(r.Message, w.text) {
		w.n.Add(1)
	}
	return nil
}

// TestStartLogsCheckWarningsOnce: a warning of walcast check does not
// stop capture; it is logged once, not at every reconnection.
func TestStartLogsCheckWarningsOnce(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "CREATE PUBLICATION walcast FOR TABLE guarantee, attendance, vote_count, election_results WITH (publish = 'insert, update')")
	warnings := &warnCounter{text: "publication walcast does not publish deletes"}
	e := &sessionEnv{pg: pg, c: New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
		Tables: checkTables(t, schema.DefaultTables), Logger: slog.New(warnings), MaxBackoff: 100 * time.Millisecond}, &fakeSink{})}
	e.run(t)
	pg.Exec(t, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walcast'")
	e.waitFor(t, "a second session streams", func() bool { st := e.c.Status(); return st.Sessions >= 2 && st.Streaming })
	if n := warnings.n.Load(); n != 1 {
		t.Errorf("the warning %q is logged %d times over two sessions, want once", warnings.text, n)
	}
}

// At each session's start capture hands on the tracked tables' primary
// keys from the catalog, in key order: not pgoutput's key flags, which
// mark every column under REPLICA IDENTITY FULL. A table without a
// primary key is left out.
func TestStartReportsPrimaryKeys(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, `ALTER TABLE vote_count DROP CONSTRAINT vote_count_pkey, ADD PRIMARY KEY (candidate_id, committee_id)`)
	pg.Exec(t, `ALTER TABLE election_results DROP CONSTRAINT election_results_pkey`)
	got := make(chan map[string][]string, 4)
	e := &sessionEnv{pg: pg, c: New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
		Tables: checkTables(t, schema.DefaultTables), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBackoff: 100 * time.Millisecond,
		OnKeys: func(k map[string][]string) { got <- k }}, &fakeSink{})}
	e.run(t)
	keys := <-got
	want := map[string][]string{"public.guarantee": {"id"}, "public.attendance": {"id"}, "public.vote_count": {"candidate_id", "committee_id"}}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Fatalf("keys = %v, want %v", keys, want)
	}
}
