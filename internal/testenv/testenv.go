package testenv

import (
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
