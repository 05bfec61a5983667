package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/launch"
)

// Postgres is a throwaway PostgreSQL server with wal_level=logical, owned by
// one test. Its superuser is "postgres" and local TCP connections need no
// password. Methods may be called from the test's goroutine or its cleanups;
// they are not meant to race with each other.
type Postgres struct {
	control
	srv *launch.Postgres
}

// pgConfig collects the options of StartPostgres.
type pgConfig struct {
	settings [][2]string
}

// PGOption changes how StartPostgres configures the server.
type PGOption func(*pgConfig)

// WithSetting adds a postgresql.conf line, after testenv's own, so it wins
// over them. For example WithSetting("wal_level", "replica") builds a
// database without logical replication for negative tests. The port is the
// one setting it cannot change: testenv passes it on the command line.
func WithSetting(name, value string) PGOption {
	return func(c *pgConfig) { c.settings = append(c.settings, [2]string{name, value}) }
}

// StartPostgres starts a new PostgreSQL cluster for t on a free 127.0.0.1
// port and waits until it accepts connections. The cluster is a copy of a
// template made once by initdb, configured with wal_level=logical,
// max_replication_slots=10, max_wal_senders=10, fsync=off,
// full_page_writes=off, synchronous_commit=on (so Kill loses no commit) and
// any opts. t.Cleanup shuts it down (fast shutdown, then SIGKILL) and removes
// its folder; a failed test gets the log's tail. Under -short t is skipped.
func StartPostgres(t testing.TB, opts ...PGOption) *Postgres {
	t.Helper()
	SkipIfShort(t, "a PostgreSQL server")
	began := time.Now()
	var cfg pgConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	srv, err := launch.StartPostgres(context.Background(), launch.PostgresConfig{
		Name: "testenv", Settings: cfg.settings, SweepAbandoned: true,
	})
	check(t, "start postgres", err)
	p := &Postgres{control: control{srv}, srv: srv}
	own(t, srv)
	t.Logf("testenv: postgres ready at %s in %s (data dir %s)", p.URL(), time.Since(began).Round(time.Millisecond), srv.Dir())
	return p
}

// URL is the libpq URL of the "postgres" database as the superuser.
func (p *Postgres) URL() string { return p.srv.URL() }

// DatabaseURL is the URL of another database on the same server.
func (p *Postgres) DatabaseURL(db string) string { return p.srv.DatabaseURL(db) }

// CreateDatabase creates a database and returns its URL.
func (p *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	p.Exec(t, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return p.DatabaseURL(name)
}

// Exec runs sql on the "postgres" database; see ExecDB.
func (p *Postgres) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	p.ExecDB(t, p.URL(), sql, args...)
}

// ExecDB runs sql on the database at dbURL over a new connection, failing t
// on error. Without args, sql may hold several statements.
func (p *Postgres) ExecDB(t testing.TB, dbURL, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v\n%s", dbURL, err, p.LogTail(20))
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("testenv: exec %q: %v", shorten(sql), err)
	}
}

// shorten keeps long SQL readable in failure messages.
func shorten(s string) string {
	const limit = 200
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
