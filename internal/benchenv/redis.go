package benchenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server without persistence (a benchmark turns
// the AOF on with CONFIG SET when it wants it).
type Redis struct {
	dir  string
	port int
	proc *child
}

// StartRedis runs redis-server on a free 127.0.0.1 port in a temporary
// folder and waits until it accepts connections.
func StartRedis(ctx context.Context) (_ *Redis, err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found on PATH: install it (`apt-get install redis-server` on Debian/Ubuntu, or `make deps`), " +
			"or benchmark the in-process bus with --bus memory")
	}
	dir, err := os.MkdirTemp("", "walcast-bench-redis-")
	if err != nil {
		return nil, fmt.Errorf("create redis folder: %w", err)
	}
	r := &Redis{dir: dir}
	defer func() {
		if err != nil {
			_ = r.Stop()
		}
	}()
	if r.port, err = FreePort(); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, fmt.Errorf("open redis log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", dir,
		"--daemonize", "no", "--save", "", "--appendonly", "no", "--maxclients", "1000")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = ProcAttr(nil)
	if r.proc, err = startChild(cmd); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r.proc.exited() {
			return nil, fmt.Errorf("redis-server exited at start:\n%s", tail(filepath.Join(dir, "redis.log"), 20))
		}
		c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
		if err == nil {
			c.Close()
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis-server did not accept connections within 15s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addr is host:port; URL the go-redis URL of database 0.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }
func (r *Redis) URL() string  { return "redis://" + r.Addr() + "/0" }

// Pid is the server's process id, for reading its CPU time.
func (r *Redis) Pid() int { return r.proc.cmd.Process.Pid }

// Stop ends the server and removes its folder.
func (r *Redis) Stop() error {
	var err error
	if r.proc != nil {
		err = r.proc.stop(syscall.SIGTERM, 10*time.Second)
	}
	return errors.Join(err, os.RemoveAll(r.dir))
}
