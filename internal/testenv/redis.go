package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a throwaway redis-server owned by one test.
type Redis struct {
	bin  string
	dir  string // working directory: AOF files and redis.log
	port int
	cfg  redisConfig

	mu   sync.Mutex
	proc *process // the running server, or nil
}

// redisConfig collects the options of StartRedis.
type redisConfig struct {
	aof  bool
	args []string
}

// RedisOption changes how StartRedis runs the server.
type RedisOption func(*redisConfig)

// WithAOF turns on the append-only file with a flush on every write
// (appendonly yes, appendfsync always), so that every acknowledged write
// survives Kill. Without it the server keeps nothing on disk.
func WithAOF() RedisOption {
	return func(c *redisConfig) { c.aof = true }
}

// WithRedisArgs adds redis-server arguments after testenv's own, so they win;
// for example "--requirepass", "secret".
func WithRedisArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.args = append(c.args, args...) }
}

// StartRedis runs redis-server for t on a free 127.0.0.1 port, in its own
// temporary folder, without persistence unless WithAOF is given, and waits
// until it answers PING. t.Cleanup kills it and removes the folder; a failed
// test gets the log's tail.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	began := time.Now()
	bin, err := findRedisServer()
	if err != nil {
		t.Fatalf("testenv: start redis: %v", err)
	}
	r := &Redis{bin: bin, dir: t.TempDir()}
	for _, opt := range opts {
		opt(&r.cfg)
	}
	// Registered after t.TempDir's own cleanup, so it runs before it: the
	// server is gone before its folder is removed.
	t.Cleanup(func() { r.cleanup(t) })

	for attempt := 1; ; attempt++ {
		if r.port, err = freePort(); err != nil {
			t.Fatalf("testenv: start redis: %v", err)
		}
		err = r.start()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			t.Fatalf("testenv: start redis on port %d: %v\n%s", r.port, err, r.LogTail(30))
		}
	}
	t.Logf("testenv: redis ready at %s in %s", r.URL(), time.Since(began).Round(time.Millisecond))
	return r
}

// args are redis-server's arguments. The log goes to stdout (the default),
// which testenv sends to redis.log, so that errors printed before the log
// file would be opened, such as a bad argument, land there too.
func (r *Redis) args() []string {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--daemonize", "no",
		"--save", "",
	}
	if r.cfg.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, r.cfg.args...)
}

func (r *Redis) logPath() string { return filepath.Join(r.dir, "redis.log") }

// start runs the server as a direct child and waits until it answers PING.
func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		return errors.New("already running")
	}
	logStart := fileSize(r.logPath())
	proc, err := startProcess(r.bin, r.args(), r.dir, r.logPath(), nil)
	if err != nil {
		return err
	}
	r.proc = proc
	err = poll(readyTimeout, func() error {
		if proc.exited() {
			exitErr := fmt.Errorf("redis-server exited: %w", proc.exitError())
			if bindFailed(readFrom(r.logPath(), logStart)) {
				exitErr = fmt.Errorf("%w: %w", errPortTaken, exitErr)
			}
			return permanent(exitErr)
		}
		return r.ping()
	})
	if err != nil {
		proc.kill()
		r.proc = nil
		return err
	}
	return nil
}

// ping sends PING over a new connection and wants PONG. While the server
// replays its AOF it answers LOADING instead, and is not ready yet. When a
// password is configured with --requirepass it authenticates first, so that
// the answer still tells loading from ready.
func (r *Redis) ping() error {
	conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	req, replies := respCommand("PING"), 1
	if pass, ok := r.password(); ok {
		req, replies = respCommand("AUTH", pass)+req, 2
	}
	if _, err := conn.Write([]byte(req)); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	var reply string
	for range replies {
		if reply, err = br.ReadString('\n'); err != nil {
			return err
		}
		reply = strings.TrimSpace(reply)
		if strings.HasPrefix(reply, "-") && !strings.HasPrefix(reply, "-LOADING") {
			return fmt.Errorf("redis answered %q", reply)
		}
	}
	if reply != "+PONG" {
		return fmt.Errorf("redis answered %q to PING", reply)
	}
	return nil
}

// password returns the last --requirepass value among the extra arguments.
func (r *Redis) password() (string, bool) {
	pass, ok := "", false
	for i := 0; i+1 < len(r.cfg.args); i++ {
		if r.cfg.args[i] == "--requirepass" {
			pass, ok = r.cfg.args[i+1], true
		}
	}
	return pass, ok
}

// respCommand encodes a command as a RESP array of bulk strings.
func respCommand(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// URL is the go-redis URL of database 0. It carries no password: with
// WithRedisArgs("--requirepass", …) the client must add its own.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Addr is host:port, as go-redis's Options.Addr wants it.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Port is the TCP port; it stays the same across Stop, Kill and Start.
func (r *Redis) Port() int { return r.port }

// Kill crashes the server with SIGKILL and waits until it has exited and its
// port is free. With WithAOF every acknowledged write survives; without it,
// everything is lost.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	if err := r.halt(func(p *process) error { return p.kill() }); err != nil {
		t.Fatalf("testenv: kill redis: %v\n%s", err, r.LogTail(20))
	}
}

// Stop shuts the server down cleanly with SIGTERM, which flushes the AOF
// when there is one, and waits until it has exited and its port is free.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	if err := r.halt(func(p *process) error { return p.stop(syscall.SIGTERM, readyTimeout) }); err != nil {
		t.Fatalf("testenv: stop redis: %v\n%s", err, r.LogTail(20))
	}
}

// halt ends the running server with end, then waits for the port.
func (r *Redis) halt(end func(*process) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return nil
	}
	err := end(r.proc)
	r.proc = nil
	if err != nil {
		return err
	}
	return poll(readyTimeout, func() error {
		if !portFree(r.port) {
			return fmt.Errorf("port %d still in use", r.port)
		}
		return nil
	})
}

// Start starts a stopped or killed server again on the same port and folder,
// so the AOF, if any, is replayed, and waits until it answers PING.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	err := poll(readyTimeout, func() error {
		err := r.start()
		if err != nil && !errors.Is(err, errPortTaken) {
			return permanent(err)
		}
		return err
	})
	if err != nil {
		t.Fatalf("testenv: restart redis on port %d: %v\n%s", r.port, err, r.LogTail(30))
	}
}

// LogTail returns the last n lines of the server log, to put in failure
// messages.
func (r *Redis) LogTail(n int) string {
	return logTail("redis log "+r.logPath(), r.logPath(), n)
}

// cleanup kills the server however the test ended: its data is thrown away
// with its folder, so a clean shutdown would only cost time.
func (r *Redis) cleanup(t testing.TB) {
	r.mu.Lock()
	if r.proc != nil {
		if err := r.proc.kill(); err != nil {
			t.Errorf("testenv: kill redis: %v", err)
		}
		r.proc = nil
	}
	r.mu.Unlock()
	if t.Failed() {
		t.Log(r.LogTail(30))
	}
	// The folder is t.TempDir's, removed by its own cleanup.
}
