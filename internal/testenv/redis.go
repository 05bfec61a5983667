package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/launch"
)

// Redis is a throwaway redis-server owned by one test.
type Redis struct {
	control
	srv *launch.Redis
}

// RedisOption changes how StartRedis runs the server.
type RedisOption func(*launch.RedisConfig)

// WithAOF turns on the append-only file with a flush on every write
// (appendonly yes, appendfsync always), so that every acknowledged write
// survives Kill. Without it the server keeps nothing on disk.
func WithAOF() RedisOption {
	return func(c *launch.RedisConfig) { c.AOF = true }
}

// WithRedisArgs adds redis-server arguments after testenv's own, so they win;
// for example "--requirepass", "secret".
func WithRedisArgs(args ...string) RedisOption {
	return func(c *launch.RedisConfig) { c.Args = append(c.Args, args...) }
}

// AsReplicaOf makes the server a replica of primary (--replicaof).
// StartRedis then waits until its first sync is done.
func AsReplicaOf(primary *Redis) RedisOption {
	return func(c *launch.RedisConfig) { c.ReplicaOf, c.MasterAuth = primary.Addr(), primary.srv.Password() }
}

// StartRedis runs redis-server for t on a free 127.0.0.1 port, in its own
// temporary folder, without persistence unless WithAOF is given, and waits
// until it answers PING. t.Cleanup kills it and removes the folder; a failed
// test gets the log's tail. Under -short t is skipped.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	SkipIfShort(t, "a Redis server")
	began := time.Now()
	var cfg launch.RedisConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	srv, err := launch.StartRedis(context.Background(), cfg)
	check(t, "start redis", err)
	r := &Redis{control: control{srv}, srv: srv}
	own(t, srv)
	if cfg.ReplicaOf != "" {
		r.waitSynced(t, cfg.ReplicaOf, cfg.MasterAuth)
	}
	t.Logf("testenv: redis ready at %s in %s", r.URL(), time.Since(began).Round(time.Millisecond))
	return r
}

// URL is the go-redis URL of database 0. It carries no password: with
// WithRedisArgs("--requirepass", …) the client must add its own.
func (r *Redis) URL() string { return r.srv.URL() }

// Addr is host:port, as go-redis's Options.Addr wants it.
func (r *Redis) Addr() string { return r.srv.Addr() }

// Pause freezes the server with SIGSTOP until Resume: a paused replica
// stops acknowledging its primary. t.Cleanup still kills it.
func (r *Redis) Pause(t testing.TB) {
	t.Helper()
	check(t, "pause redis", r.srv.Pause())
}

// Resume lets a paused server run again.
func (r *Redis) Resume(t testing.TB) {
	t.Helper()
	check(t, "resume redis", r.srv.Resume())
}

// waitSynced waits until the primary at primaryAddr streams to the
// replica r (its first sync done and acknowledged: the primary lists it
// online), or fails t. The replica's own master_link_status turns up
// earlier, before the primary streams to it.
func (r *Redis) waitSynced(t testing.TB, primaryAddr, password string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: primaryAddr, Password: password})
	defer rdb.Close()
	online := fmt.Sprintf("port=%d,state=online", r.Port())
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := rdb.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, online) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: replica at %s not synced after 30s (%v)\n%s", r.Addr(), err, r.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not waiting out a delay
	}
}

// Do sends one command to the server on a new connection and returns its
// answer (a string, an int64, nil or a []any of those), failing t on an
// error.
func (r *Redis) Do(t testing.TB, args ...string) any {
	t.Helper()
	v, err := r.srv.Do(context.Background(), args...)
	check(t, "redis command", err)
	return v
}
