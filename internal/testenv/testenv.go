package testenv

import (
	"context"
	"testing"

	"github.com/walcast/walcast/internal/launch"
)

// SkipIfShort skips t under `go test -short`, saying what it needs (a
// PostgreSQL server, the walcast binary, Node and Chromium): -short runs
// only the tests that need nothing outside the test binary. Without -short
// nothing is skipped here, so a missing server fails the run, in CI and
// everywhere else.
func SkipIfShort(t testing.TB, needs string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("testenv: skipped under -short: needs %s", needs)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and has
// not been returned before in this process. Another program can still take it
// before it is used; StartPostgres and StartRedis retry with a new port when
// their first start fails that way.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := launch.FreePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return port
}

// check fails t with what it was doing when err is not nil.
func check(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("testenv: %s: %v", what, err)
	}
}

// server is what launch's Postgres and Redis have in common.
type server interface {
	LogTail(n int) string
	Close() error
	Stop() error
	Kill() error
	Start(ctx context.Context) error
	Port() int
}

// own hands srv to t: t.Cleanup stops it and removes its folder however the
// test ends, and a failed test gets the tail of the server's log.
func own(t testing.TB, srv server) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.LogTail(30))
		}
		if err := srv.Close(); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
}

// control is the part of Postgres and Redis that stops, crashes and
// restarts the server, failing the test when that fails.
type control struct{ srv server }

// Stop shuts the server down cleanly and waits until it has exited and its
// port is free: PostgreSQL with a fast shutdown (sessions are disconnected,
// a checkpoint is written), Redis with SIGTERM, which flushes the AOF when
// there is one. Stopping a stopped server does nothing.
func (c control) Stop(t testing.TB) {
	t.Helper()
	if err := c.srv.Stop(); err != nil {
		t.Fatalf("testenv: %v\n%s", err, c.srv.LogTail(20))
	}
}

// Kill crashes the server with SIGKILL, as the OOM killer would, and waits
// until it has exited and its port is free; for PostgreSQL, also until every
// backend has noticed and exited, so Start can begin crash recovery at once.
// PostgreSQL keeps every commit (synchronous_commit is on); Redis keeps every
// acknowledged write with WithAOF, and nothing without it.
func (c control) Kill(t testing.TB) {
	t.Helper()
	if err := c.srv.Kill(); err != nil {
		t.Fatalf("testenv: %v\n%s", err, c.srv.LogTail(20))
	}
}

// Start starts a stopped or killed server again, on the same port and
// folder, and waits until it serves: after Kill that includes PostgreSQL's
// crash recovery or the replay of Redis's AOF.
func (c control) Start(t testing.TB) {
	t.Helper()
	if err := c.srv.Start(context.Background()); err != nil {
		t.Fatalf("testenv: %v", err) // the error carries the log's tail
	}
}

// Port is the TCP port the server listens on; it stays the same across
// Stop, Kill and Start.
func (c control) Port() int { return c.srv.Port() }

// LogTail returns the last n lines of the server log, to put in failure
// messages.
func (c control) LogTail(n int) string { return c.srv.LogTail(n) }
