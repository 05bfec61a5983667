// Package launch starts throwaway PostgreSQL (wal_level=logical) and Redis
// servers (and Redis Sentinels, see StartSentinel) for the programs that
// need one for a while: the tests (through internal/testenv, a thin
// testing.TB wrapper), `walcast demo` and
// walcast-bench. Every function returns an error instead of failing a test.
//
// Each server runs on a free 127.0.0.1 port, in its own temporary folder, as
// a direct child of the calling process, so that Kill is a true SIGKILL of
// the server. The child gets its own process group, so a terminal's Ctrl-C
// reaches only the parent, which then stops the servers in order; on Linux the
// kernel also SIGKILLs the servers should the parent die without cleaning up.
// Close stops a server and removes its folder.
//
//	pg, err := launch.StartPostgres(ctx, launch.PostgresConfig{Name: "demo"})
//	defer pg.Close()
//	pg.Kill()       // SIGKILL the postmaster: a crash
//	pg.Start(ctx)   // same port, same data: crash recovery
//
// PostgreSQL refuses to run as root, so as root the cluster is owned and run
// by the "postgres" system user, in a folder that user can enter.
//
// Starting a cluster is made cheap by running initdb once and copying its
// result, into /dev/shm when that is a roomy tmpfs, else under os.TempDir.
// The template is cached there, keyed by the PostgreSQL version, so parallel
// processes and later runs share it.
package launch
