package cdc

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
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

// lockedBuffer is a log destination written by capture's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStartLogsCheckWarningsOnce: a warning of walcast check does not
// stop capture; it is logged once, not at every reconnection.
func TestStartLogsCheckWarningsOnce(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "CREATE PUBLICATION walcast FOR TABLE guarantee, attendance, vote_count, election_results WITH (publish = 'insert, update')")
	var logs lockedBuffer
	c := New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: checkTables(t, schema.DefaultTables),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), MaxBackoff: 100 * time.Millisecond}, &fakeSink{})
	e := &sessionEnv{pg: pg, c: c}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	e.waitFor(t, "capture streams", func() bool { return c.Status().Streaming })
	pg.Exec(t, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walcast'")
	e.waitFor(t, "a second session streams", func() bool { return c.Status().Sessions >= 2 && c.Status().Streaming })
	const warning = "publication walcast does not publish deletes"
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Errorf("the warning %q is logged %d times over two sessions, want once; log:\n%s", warning, n, logs.String())
	}
}
