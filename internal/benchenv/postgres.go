package benchenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster in a temporary folder.
type Postgres struct {
	dir  string // data/ and postgres.log
	port int
	proc *child
}

// Settings are the postgresql.conf lines of a benchmark cluster: logical
// decoding, and no fsync, because the data only has to live as long as the
// run (what is measured is decoding and delivery, not the disk).
var Settings = [][2]string{
	{"wal_level", "logical"},
	{"max_replication_slots", "16"},
	{"max_wal_senders", "16"},
	{"max_connections", "200"},
	{"fsync", "off"},
	{"full_page_writes", "off"},
	{"synchronous_commit", "on"},
	{"listen_addresses", "127.0.0.1"},
	{"unix_socket_directories", ""},
}

// StartPostgres initialises a cluster, starts it on a free 127.0.0.1 port
// and waits until it accepts connections. On error nothing is left behind.
func StartPostgres(ctx context.Context) (_ *Postgres, err error) {
	initdb, err := PGProgram("initdb")
	if err != nil {
		return nil, err
	}
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	if _, err := os.Stat(postgres); err != nil {
		if postgres, err = PGProgram("postgres"); err != nil {
			return nil, err
		}
	}
	own, err := lookupOwner()
	if err != nil {
		return nil, err
	}
	base := os.TempDir()
	if own.cred != nil && !worldEnterable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "walcast-bench-pg-")
	if err != nil {
		return nil, fmt.Errorf("create postgres folder: %w", err)
	}
	p := &Postgres{dir: dir}
	defer func() {
		if err != nil {
			_ = p.Stop()
		}
	}()
	if own.cred != nil {
		if err := os.Chown(dir, own.uid, own.gid); err != nil {
			return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	cmd.Dir = dir
	cmd.SysProcAttr = ProcAttr(own.cred)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, bytes.TrimSpace(out))
	}
	if p.port, err = FreePort(); err != nil {
		return nil, err
	}
	var conf strings.Builder
	conf.WriteString("\n# walcast-bench\n")
	for _, s := range append(Settings, [2]string{"port", strconv.Itoa(p.port)}) {
		fmt.Fprintf(&conf, "%s = '%s'\n", s[0], s[1])
	}
	if err := appendFile(filepath.Join(data, "postgresql.conf"), conf.String()); err != nil {
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}
	logFile, err := os.OpenFile(p.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	srv := exec.Command(postgres, "-D", data)
	srv.Dir = dir
	srv.Stdout, srv.Stderr = logFile, logFile
	srv.SysProcAttr = ProcAttr(own.cred)
	if p.proc, err = startChild(srv); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	return p, p.waitReady(ctx)
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}

// URL is the libpq URL of the "postgres" database as the superuser.
func (p *Postgres) URL() string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: "127.0.0.1:" + strconv.Itoa(p.port),
		Path: "/postgres", RawQuery: "sslmode=disable"}
	return u.String()
}

func (p *Postgres) logPath() string { return filepath.Join(p.dir, "postgres.log") }

// LogTail returns the end of the server's log.
func (p *Postgres) LogTail(n int) string { return tail(p.logPath(), n) }

func (p *Postgres) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.proc.exited() {
			return fmt.Errorf("postgres exited at start:\n%s", p.LogTail(20))
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, p.URL())
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 30s: %w\n%s", err, p.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop shuts the server down (SIGINT, PostgreSQL's fast shutdown; SIGKILL
// after 10 s) and removes its folder.
func (p *Postgres) Stop() error {
	var err error
	if p.proc != nil {
		err = p.proc.stop(syscall.SIGINT, 10*time.Second)
	}
	return errors.Join(err, os.RemoveAll(p.dir))
}
