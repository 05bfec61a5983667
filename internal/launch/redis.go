package launch

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server. Its methods are not meant to race with
// each other.
type Redis struct {
	server   // dir is the working directory: AOF files and redis.log
	cfg      RedisConfig
	busPort  int             // the cluster bus's port, with cfg.Cluster
	sentinel *SentinelConfig // set for a Sentinel (see StartSentinel)
}

// RedisConfig says how StartRedis runs the server.
type RedisConfig struct {
	// AOF turns on the append-only file with a flush on every write
	// (appendonly yes, appendfsync always), so that every acknowledged
	// write survives Kill. Without it the server keeps nothing on disk.
	AOF bool
	// ReplicaOf, when set (host:port), makes the server a replica of that
	// primary (--replicaof). StartRedis returns once it answers PING, which
	// may be before its first sync is done: see Redis.Synced.
	ReplicaOf string
	// Cluster starts the server as a Redis Cluster node (cluster-enabled
	// yes), its cluster bus on a second free port, with nodes.conf in its
	// folder; StartRedisCluster joins such nodes into a cluster.
	// ClusterNodeTimeout is cluster-node-timeout: how long a node may not
	// answer before the cluster counts it failed (default 15 s).
	Cluster            bool
	ClusterNodeTimeout time.Duration
	// MasterAuth is the primary's password, for a replica (--masterauth).
	MasterAuth string
	// Args are redis-server arguments after the launcher's own, so they
	// win; for example "--requirepass", "secret".
	Args []string
}

// StartRedis runs redis-server on a free 127.0.0.1 port, in its own
// temporary folder, and waits until it answers PING. On error nothing is left
// behind, and the error carries the log's tail.
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	return startRedis(ctx, cfg, nil)
}

// startRedis starts a redis-server, or a Sentinel when sentinel is set.
func startRedis(ctx context.Context, cfg RedisConfig, sentinel *SentinelConfig) (_ *Redis, err error) {
	bin, err := findRedisServer()
	if err != nil {
		return nil, err
	}
	name, folder := "redis-server", "walcast-redis-"
	if sentinel != nil {
		name, folder = "redis-sentinel", "walcast-sentinel-"
	}
	dir, err := os.MkdirTemp("", folder)
	if err != nil {
		return nil, fmt.Errorf("make %s folder: %w", name, err)
	}
	r := &Redis{server: server{name: name, bin: bin, dir: dir, owner: self(),
		logPath: filepath.Join(dir, "redis.log")}, cfg: cfg, sentinel: sentinel}
	r.args = r.arguments
	if cfg.Cluster {
		if r.busPort, err = FreePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if sentinel != nil {
		r.args = r.sentinelArguments
	}
	r.ready = func(context.Context) error { return r.ping() }
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, r.LogTail(30))
			_ = r.Close()
		}
	}()
	if err := r.startNew(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// arguments are redis-server's arguments. The log goes to stdout (the default),
// which the launcher sends to redis.log, so that errors printed before the
// log file would be opened, such as a bad argument, land there too.
func (r *Redis) arguments() []string {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--daemonize", "no",
		"--save", "",
		// A replica's first sync starts at once, not after 5 s.
		"--repl-diskless-sync-delay", "0",
	}
	if r.cfg.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if r.cfg.ReplicaOf != "" {
		host, port, _ := net.SplitHostPort(r.cfg.ReplicaOf)
		args = append(args, "--replicaof", host, port)
	}
	if r.cfg.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(r.busPort))
		if r.cfg.ClusterNodeTimeout > 0 {
			args = append(args, "--cluster-node-timeout", strconv.FormatInt(r.cfg.ClusterNodeTimeout.Milliseconds(), 10))
		}
	}
	if r.cfg.MasterAuth != "" {
		args = append(args, "--masterauth", r.cfg.MasterAuth)
	}
	return append(args, r.cfg.Args...)
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

// Password is the server's --requirepass among RedisConfig.Args (for a
// Sentinel, SentinelConfig.Password); "" when none.
func (r *Redis) Password() string {
	pass, _ := r.password()
	return pass
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

// Kill crashes the server with SIGKILL and waits until it has exited and its
// port is free. With AOF every acknowledged write survives; without it,
// everything is lost.
func (r *Redis) Kill() error { return r.kill() }

// Stop shuts the server down cleanly with SIGTERM, which flushes the AOF
// when there is one, and waits until it has exited and its port is free.
func (r *Redis) Stop() error { return r.stop(syscall.SIGTERM, readyTimeout) }

// Start starts a stopped or killed server again on the same port and folder,
// so the AOF, if any, is replayed, and waits until it answers PING.
func (r *Redis) Start(ctx context.Context) error { return r.restart(ctx) }

// Pause freezes the server with SIGSTOP: it keeps its connections but
// answers nothing (a replica stops acknowledging its primary) until Resume.
func (r *Redis) Pause() error { return r.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again with SIGCONT.
func (r *Redis) Resume() error { return r.signal(syscall.SIGCONT) }

// Close kills the server, whose data is thrown away with its folder (a clean
// shutdown would only cost time), and removes the folder.
func (r *Redis) Close() error { return r.close(r.kill) }
