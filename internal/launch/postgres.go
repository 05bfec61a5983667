package launch

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL server with wal_level=logical. Its
// superuser is "postgres" and local TCP connections need no password. Its
// methods are not meant to race with each other.
type Postgres struct {
	server // dir is the data directory; it also holds server.log
}

// PostgresConfig says how StartPostgres makes a cluster.
type PostgresConfig struct {
	// Name tells whose cluster it is ("testenv", "demo", "bench"); the
	// folder is named walcast-<Name>-pg-….
	Name string
	// Settings are postgresql.conf lines written after the launcher's own
	// (BaseSettings), so they win. The port is the one setting they cannot
	// change: the launcher passes it on the command line.
	Settings [][2]string
	// SweepAbandoned removes, on the first start in this process, folders
	// of the same Name older than an hour that no process works in: they
	// were left by a process that died without Close (a test binary
	// stopped by -timeout).
	SweepAbandoned bool
	// Fresh runs initdb in the cluster's own folder on disk instead of
	// copying the template cached in /dev/shm or the temp folder: slower
	// (about a second), but nothing outlives Close, as `walcast demo`
	// promises.
	Fresh bool
}

// BaseSettings make a cluster that supports logical replication and is fast
// to use. fsync and full_page_writes are off because the data only has to
// survive a killed process, not a power loss: the kernel keeps what was
// written. synchronous_commit stays on, although it looks like the same kind
// of saving: with it off a commit returns before its WAL has left
// PostgreSQL's shared memory, and Kill then loses transactions the caller saw
// commit (in a trial, 15 of 15 rows committed just before a Kill were gone).
// With fsync off, a synchronous commit costs one write(2), nothing more.
var BaseSettings = [][2]string{
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

// StartPostgres starts a new PostgreSQL cluster on a free 127.0.0.1 port and
// waits until it accepts connections. The cluster is a copy of a template
// made once by initdb, configured with BaseSettings and cfg.Settings. On
// error nothing is left behind, and the error carries the log's tail.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (_ *Postgres, err error) {
	shared, err := sharedPG()
	if err != nil {
		return nil, err
	}
	name := cfg.Name
	if name == "" {
		name = "launch"
	}
	prefix := "walcast-" + name + "-pg-"
	if cfg.SweepAbandoned {
		shared.sweepOnce(prefix)
	}
	// As root, the server runs as another user, who must be able to enter
	// the folder and every folder above it: pgBaseDirs chose such a base.
	base := shared.base
	if cfg.Fresh {
		base = shared.bases[len(shared.bases)-1]
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		return nil, fmt.Errorf("make cluster folder: %w", err)
	}
	// /proc shows working directories with symlinks resolved; so must we,
	// to recognise the server's processes.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	p := &Postgres{server{
		name: "postgres", bin: shared.bins.postgres, dir: dir, owner: shared.owner,
		logPath: filepath.Join(dir, "server.log"),
	}}
	p.args = func() []string { return []string{"-D", p.dir, "-p", strconv.Itoa(p.port)} }
	p.ready = func(ctx context.Context) error { return ping(ctx, p.URL()) }
	p.reap = p.waitProcessesGone
	defer func() {
		if err != nil {
			if fileSize(p.logPath) > 0 {
				err = fmt.Errorf("%w\n%s", err, p.LogTail(30))
			}
			_ = p.Close()
		}
	}()
	if err := shared.owner.chown(dir); err != nil {
		return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
	}
	if cfg.Fresh {
		err = shared.initdb(dir)
	} else {
		err = shared.copyTemplate(dir)
	}
	if err != nil {
		return nil, err
	}
	if err := p.writeConfig(cfg.Settings); err != nil {
		return nil, err
	}
	if err := p.startNew(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// writeConfig appends the launcher's settings and then extra to
// postgresql.conf; later lines win.
func (p *Postgres) writeConfig(extra [][2]string) error {
	settings := append([][2]string{}, BaseSettings...)
	// A Unix socket in the data directory lets a developer poke at the
	// server with psql -h DIR, but socket paths are limited to about 100
	// bytes; TCP is all walcast itself uses.
	socketDir := p.dir
	if len(socketDir)+len("/.s.PGSQL.65535.lock") > 100 {
		socketDir = ""
	}
	settings = append(settings, [2]string{"unix_socket_directories", socketDir})
	settings = append(settings, extra...)

	var b strings.Builder
	b.WriteString("\n# Added by walcast internal/launch.\n")
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

// ping opens and closes one real connection, which succeeds only once the
// server has finished starting or recovering.
func ping(ctx context.Context, connURL string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
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

// Stop shuts the server down cleanly (a fast shutdown: sessions are
// disconnected, a checkpoint is written) and waits until it has exited and
// its port is free. Stopping a stopped server does nothing.
func (p *Postgres) Stop() error { return p.stop(syscall.SIGINT, readyTimeout) }

// Kill crashes the server: SIGKILL to the postmaster, as the OOM killer
// would. It returns once the postmaster has exited, every backend has noticed
// and exited too, and the port is free, so Start can begin crash recovery at
// once. Committed transactions survive (synchronous_commit is on).
func (p *Postgres) Kill() error { return p.kill() }

// waitProcessesGone waits until no process works in the data directory.
// Backends exit by themselves soon after the postmaster dies, but one busy in
// a long computation may not look up for a while, so after a few seconds the
// stragglers are killed. Until all of them are gone a new postmaster refuses
// to start, because the old shared memory is still in use.
func (p *Postgres) waitProcessesGone() error {
	began := time.Now()
	return poll(context.Background(), readyTimeout, func() error {
		pids := processesIn(p.dir)
		if len(pids) == 0 {
			return nil
		}
		if time.Since(began) > 5*time.Second {
			for _, pid := range pids {
				killPID(pid)
			}
		}
		return fmt.Errorf("processes %v still run in %s", pids, p.dir)
	})
}

// Start starts a stopped or killed server again, on the same port and data
// directory, and waits until it accepts connections: after Kill that
// includes crash recovery.
func (p *Postgres) Start(ctx context.Context) error { return p.restart(ctx) }

// Close stops the server however it is doing (a fast shutdown; ten seconds
// later SIGKILL) and removes its folder.
func (p *Postgres) Close() error {
	return p.close(func() error { return p.stop(syscall.SIGINT, 10*time.Second) })
}
