// Package benchenv starts throwaway PostgreSQL and Redis servers for
// programs that are not tests, such as cmd/walcast-bench. internal/testenv
// does the same for tests, but depends on testing.TB; this package returns
// errors instead and leaves nothing behind once Stop has run.
//
// Start with StartPostgres and StartRedis; each server runs as a direct
// child in its own process group (so a terminal's Ctrl-C reaches only the
// parent, which then stops the servers in order) and is SIGKILLed by the
// kernel should the parent die without cleaning up.
package benchenv
