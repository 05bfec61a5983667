package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server. Its methods are not meant to race with
// each other.
type Redis struct {
	bin  string
	dir  string // working directory: AOF files and redis.log
	port int
	cfg  RedisConfig

	mu   sync.Mutex
	proc *process // the running server, or nil
}

// RedisConfig says how StartRedis runs the server.
type RedisConfig struct {
	// AOF turns on the append-only file with a flush on every write
	// (appendonly yes, appendfsync always), so that every acknowledged
	// write survives Kill. Without it the server keeps nothing on disk.
	AOF bool
	// Args are redis-server arguments after the launcher's own, so they
	// win; for example "--requirepass", "secret".
	Args []string
}

// StartRedis runs redis-server on a free 127.0.0.1 port, in its own
// temporary folder, and waits until it answers PING. On error nothing is left
// behind, and the error carries the log's tail.
func StartRedis(ctx context.Context, cfg RedisConfig) (_ *Redis, err error) {
	bin, err := findRedisServer()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "walcast-redis-")
	if err != nil {
		return nil, fmt.Errorf("make redis folder: %w", err)
	}
	r := &Redis{bin: bin, dir: dir, cfg: cfg}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, r.LogTail(30))
			_ = r.Close()
		}
	}()
	for attempt := 1; ; attempt++ {
		if r.port, err = FreePort(); err != nil {
			return nil, err
		}
		err = r.start(ctx)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return nil, fmt.Errorf("start redis on port %d: %w", r.port, err)
		}
	}
}

// args are redis-server's arguments. The log goes to stdout (the default),
// which the launcher sends to redis.log, so that errors printed before the
// log file would be opened, such as a bad argument, land there too.
func (r *Redis) args() []string {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--daemonize", "no",
		"--save", "",
	}
	if r.cfg.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, r.cfg.Args...)
}

func (r *Redis) logPath() string { return filepath.Join(r.dir, "redis.log") }

// start runs the server as a direct child and waits until it answers PING.
func (r *Redis) start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		return errors.New("already running")
	}
	logStart := fileSize(r.logPath())
	proc, err := startProcess(r.bin, r.args(), r.dir, r.logPath(), self())
	if err != nil {
		return err
	}
	r.proc = proc
	err = poll(ctx, readyTimeout, func() error {
		if proc.exited() {
			return permanent(exitError("redis-server", proc, r.logPath(), logStart))
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
	for i := 0; i+1 < len(r.cfg.Args); i++ {
		if r.cfg.Args[i] == "--requirepass" {
			pass, ok = r.cfg.Args[i+1], true
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
// --requirepass the client must add its own.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Addr is host:port, as go-redis's Options.Addr wants it.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Port is the TCP port; it stays the same across Stop, Kill and Start.
func (r *Redis) Port() int { return r.port }

// Kill crashes the server with SIGKILL and waits until it has exited and its
// port is free. With AOF every acknowledged write survives; without it,
// everything is lost.
func (r *Redis) Kill() error {
	if err := r.halt(func(p *process) error { return p.kill() }); err != nil {
		return fmt.Errorf("kill redis: %w", err)
	}
	return nil
}

// Stop shuts the server down cleanly with SIGTERM, which flushes the AOF
// when there is one, and waits until it has exited and its port is free.
func (r *Redis) Stop() error {
	if err := r.halt(func(p *process) error { return p.stop(syscall.SIGTERM, readyTimeout) }); err != nil {
		return fmt.Errorf("stop redis: %w", err)
	}
	return nil
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
	return waitPortFree(r.port)
}

// Start starts a stopped or killed server again on the same port and folder,
// so the AOF, if any, is replayed, and waits until it answers PING.
func (r *Redis) Start(ctx context.Context) error {
	err := poll(ctx, readyTimeout, func() error {
		err := r.start(ctx)
		if err != nil && !errors.Is(err, errPortTaken) {
			return permanent(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("restart redis on port %d: %w\n%s", r.port, err, r.LogTail(30))
	}
	return nil
}

// LogTail returns the last n lines of the server log, to put in error
// messages.
func (r *Redis) LogTail(n int) string {
	return logTail("redis log "+r.logPath(), r.logPath(), n)
}

// Close kills the server, whose data is thrown away with its folder (a clean
// shutdown would only cost time), and removes the folder.
func (r *Redis) Close() error {
	r.mu.Lock()
	var err error
	if r.proc != nil {
		if err = r.proc.kill(); err != nil {
			err = fmt.Errorf("kill redis: %w", err)
		}
		r.proc = nil
	}
	r.mu.Unlock()
	if rmErr := os.RemoveAll(r.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove redis folder: %w", rmErr))
	}
	return err
}
