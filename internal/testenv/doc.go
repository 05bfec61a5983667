// Package testenv gives integration tests real, throwaway PostgreSQL and
// Redis servers, and can stop, crash and restart them for fault tests. It is
// a thin testing.TB wrapper over internal/launch, which the demo and
// walcast-bench use too.
//
// Start with [StartPostgres] and [StartRedis]. Each call gives the test its own
// server on a free 127.0.0.1 port, in its own temporary folder, and registers a
// t.Cleanup that shuts it down and removes the folder, even when the test fails
// halfway. When the test has failed, that cleanup also logs the tail of the
// server's log; [Postgres.LogTail] and [Redis.LogTail] give it on demand, for
// failure messages.
//
//	pg := testenv.StartPostgres(t) // wal_level=logical, trust auth
//	pg.Exec(t, "CREATE TABLE guarantee (id int PRIMARY KEY)")
//	rdb := testenv.StartRedis(t, testenv.WithAOF())
//	pg.Kill(t)  // SIGKILL the postmaster: a crash
//	pg.Start(t) // same port, same data: crash recovery
//
// [StartProxy] puts a fault-injecting TCP proxy in front of either server:
// it can silence the open connections (no FIN, no RST), add latency, or
// reset them, while new connections pass.
//
// The servers are the real programs, not fakes: PostgreSQL's initdb and
// postgres, and redis-server. When one is missing the test fails (it never
// skips), naming the package to install; `make test` installs them.
//
// Under `go test -short`, and only then, every test that needs a server, the
// walcast binary, Node or Chromium is skipped: [SkipIfShort] is the one place
// that decides, and StartPostgres and StartRedis call it before they look for
// any program. So `go test -short ./...` runs the unit tests in seconds on a
// machine without PostgreSQL or Redis.
//
// Each server is a direct child of the test binary, so Kill is a true SIGKILL
// of the server, and the kernel kills the servers if the test binary dies
// without running its cleanups (on Linux). Folders left behind that way are
// removed by a later test run once they are an hour old.
package testenv
