package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL server with wal_level=logical, owned by
// one test. Its superuser is "postgres" and local TCP connections need no
// password. Methods may be called from the test's goroutine or its cleanups;
// they are not meant to race with each other.
type Postgres struct {
	shared *pgShared
	dir    string // data directory; also holds server.log
	port   int

	mu   sync.Mutex
	proc *process // the running postmaster, or nil
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

// baseSettings make a cluster that supports logical replication and is fast
// to use. fsync and full_page_writes are off because the data only has to
// survive a killed process, not a power loss: the kernel keeps what was
// written. synchronous_commit stays on, although it looks like the same kind
// of saving: with it off a commit returns before its WAL has left
// PostgreSQL's shared memory, and Kill then loses transactions the test saw
// commit (in a trial, 15 of 15 rows committed just before a Kill were gone).
// With fsync off, a synchronous commit costs one write(2), nothing more.
var baseSettings = [][2]string{
	{"wal_level", "logical"},
	{"max_replication_slots", "10"},
	{"max_wal_senders", "10"},
	{"fsync", "off"},
	{"synchronous_commit", "on"},
	{"full_page_writes", "off"},
	{"listen_addresses", "127.0.0.1"},
	{"logging_collector", "off"}, // the log goes to stderr, which is server.log
	{"log_line_prefix", "%m [%p] "},
}

// StartPostgres starts a new PostgreSQL cluster for t on a free 127.0.0.1
// port and waits until it accepts connections. The cluster is a copy of a
// template made once by initdb, configured with wal_level=logical,
// max_replication_slots=10, max_wal_senders=10, fsync=off,
// full_page_writes=off, synchronous_commit=on (so Kill loses no commit) and
// any opts. t.Cleanup shuts it down (fast shutdown,
// then SIGKILL) and removes its folder; a failed test gets the log's tail.
func StartPostgres(t testing.TB, opts ...PGOption) *Postgres {
	t.Helper()
	began := time.Now()
	var cfg pgConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	shared, err := sharedPG()
	if err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}

	// Not t.TempDir: as root, the server runs as another user, who cannot
	// enter t.TempDir's root-only parents.
	dir, err := os.MkdirTemp(shared.base, "walcast-testenv-pg-")
	if err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}
	// /proc shows working directories with symlinks resolved; so must we,
	// to recognise the server's processes.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	p := &Postgres{shared: shared, dir: dir}
	t.Cleanup(func() { p.cleanup(t) })

	if err := shared.owner.chown(dir); err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}
	if err := shared.copyTemplate(dir); err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}
	if err := p.writeConfig(cfg); err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}

	// The port is only known to be free until someone else binds it; on
	// the first start, and only then, a lost race means trying another.
	for attempt := 1; ; attempt++ {
		if p.port, err = freePort(); err != nil {
			t.Fatalf("testenv: start postgres: %v", err)
		}
		err = p.start()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			t.Fatalf("testenv: start postgres on port %d: %v\n%s", p.port, err, p.LogTail(30))
		}
	}
	t.Logf("testenv: postgres ready at %s in %s (data dir %s)", p.URL(), time.Since(began).Round(time.Millisecond), p.dir)
	return p
}

// writeConfig appends testenv's settings and then the caller's to
// postgresql.conf; later lines win.
func (p *Postgres) writeConfig(cfg pgConfig) error {
	settings := append([][2]string{}, baseSettings...)
	// A Unix socket in the data directory lets a developer poke at a
	// paused test's server with psql -h DIR, but socket paths are limited
	// to about 100 bytes; TCP is all testenv itself uses.
	socketDir := p.dir
	if len(socketDir)+len("/.s.PGSQL.65535.lock") > 100 {
		socketDir = ""
	}
	settings = append(settings, [2]string{"unix_socket_directories", socketDir})
	settings = append(settings, cfg.settings...)

	var b strings.Builder
	b.WriteString("\n# Added by walcast internal/testenv.\n")
	for _, s := range settings {
		fmt.Fprintf(&b, "%s = %s\n", s[0], quoteConf(s[1]))
	}
	f, err := os.OpenFile(filepath.Join(p.dir, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	return f.Close()
}

// quoteConf quotes a postgresql.conf value. Every value may be quoted, and
// the file's parser treats backslashes as escapes.
func quoteConf(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// errPortTaken says the server could not listen on its port.
var errPortTaken = errors.New("port already in use")

func (p *Postgres) logPath() string { return filepath.Join(p.dir, "server.log") }

// start runs the postmaster as a direct child, so that Kill can SIGKILL it,
// and waits until it accepts a real connection.
func (p *Postgres) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && !p.proc.exited() {
		return errors.New("already running")
	}
	logStart := fileSize(p.logPath())
	proc, err := startProcess(p.shared.bins.postgres,
		[]string{"-D", p.dir, "-p", strconv.Itoa(p.port)},
		p.dir, p.logPath(), p.shared.owner.cred)
	if err != nil {
		return err
	}
	p.proc = proc

	err = poll(readyTimeout, func() error {
		if proc.exited() {
			exitErr := fmt.Errorf("postgres exited: %w", proc.exitError())
			if bindFailed(readFrom(p.logPath(), logStart)) {
				exitErr = fmt.Errorf("%w: %w", errPortTaken, exitErr)
			}
			return permanent(exitErr)
		}
		return ping(p.URL())
	})
	if err != nil {
		// Leave nothing half-started behind. The port is not waited for:
		// after a failed bind, someone else holds it.
		proc.kill()
		p.waitProcessesGone()
		p.proc = nil
		return err
	}
	return nil
}

// ping opens and closes one real connection, which succeeds only once the
// server has finished starting or recovering.
func ping(connURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func bindFailed(log string) bool {
	return strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use")
}

// URL is the libpq URL of the "postgres" database as the superuser.
func (p *Postgres) URL() string { return p.DatabaseURL("postgres") }

// DatabaseURL is the URL of another database on the same server.
func (p *Postgres) DatabaseURL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     "127.0.0.1:" + strconv.Itoa(p.port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port the server listens on; it stays the same across
// Stop, Kill and Start.
func (p *Postgres) Port() int { return p.port }

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
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
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

// Stop shuts the server down cleanly (a fast shutdown: sessions are
// disconnected, a checkpoint is written) and waits until it has exited.
// Stopping a stopped server does nothing.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Fatalf("testenv: stop postgres: %v\n%s", err, p.LogTail(20))
	}
}

func (p *Postgres) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	err := p.proc.stop(syscall.SIGINT, readyTimeout) // SIGINT is PostgreSQL's fast shutdown
	if errGone := p.waitGone(); err == nil {
		err = errGone
	}
	p.proc = nil
	return err
}

// Kill crashes the server: SIGKILL to the postmaster, as the OOM killer
// would. It returns once the postmaster has exited, every backend has noticed
// and exited too, and the port is free, so Start can begin crash recovery at
// once. Committed transactions survive (synchronous_commit is on).
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return
	}
	err := p.proc.kill()
	if errGone := p.waitGone(); err == nil {
		err = errGone
	}
	p.proc = nil
	if err != nil {
		t.Fatalf("testenv: kill postgres: %v\n%s", err, p.LogTail(20))
	}
}

// waitGone waits until no process works in the data directory any more and
// the port can be bound again. Call with p.mu held.
func (p *Postgres) waitGone() error {
	if err := p.waitProcessesGone(); err != nil {
		return err
	}
	return poll(readyTimeout, func() error {
		if !portFree(p.port) {
			return fmt.Errorf("port %d still in use", p.port)
		}
		return nil
	})
}

// waitProcessesGone waits until no process works in the data directory.
// Backends exit by themselves soon after the postmaster dies, but one busy in
// a long computation may not look up for a while, so after a few seconds the
// stragglers are killed. Until all of them are gone a new postmaster refuses
// to start, because the old shared memory is still in use.
func (p *Postgres) waitProcessesGone() error {
	began := time.Now()
	return poll(readyTimeout, func() error {
		pids := processesIn(p.dir)
		if len(pids) == 0 {
			return nil
		}
		if time.Since(began) > 5*time.Second {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return fmt.Errorf("processes %v still run in %s", pids, p.dir)
	})
}

// Start starts a stopped or killed server again, on the same port and data
// directory, and waits until it accepts connections: after Kill that
// includes crash recovery.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	// The port stays the same, because clients reconnect to the same URL;
	// if someone else holds it for a moment, keep trying until the deadline.
	err := poll(readyTimeout, func() error {
		err := p.start()
		if err != nil && !errors.Is(err, errPortTaken) {
			return permanent(err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("testenv: restart postgres on port %d: %v\n%s", p.port, err, p.LogTail(30))
	}
}

// LogTail returns the last n lines of the server log, to put in failure
// messages.
func (p *Postgres) LogTail(n int) string {
	return logTail("postgres log "+p.logPath(), p.logPath(), n)
}

// cleanup stops the server however the test ended and removes its folder.
func (p *Postgres) cleanup(t testing.TB) {
	p.mu.Lock()
	if p.proc != nil {
		// Ten seconds is plenty for a fast shutdown of a test database;
		// after that it is killed anyway.
		if err := p.proc.stop(syscall.SIGINT, 10*time.Second); err != nil {
			t.Errorf("testenv: stop postgres: %v", err)
		}
		if err := p.waitGone(); err != nil {
			t.Errorf("testenv: stop postgres: %v", err)
		}
		p.proc = nil
	}
	p.mu.Unlock()
	if t.Failed() {
		t.Log(p.LogTail(30))
	}
	if err := os.RemoveAll(p.dir); err != nil {
		t.Errorf("testenv: remove postgres data: %v", err)
	}
}
