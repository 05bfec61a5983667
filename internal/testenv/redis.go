package testenv

import (
	"context"
	"testing"
	"time"

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
	t.Logf("testenv: redis ready at %s in %s", r.URL(), time.Since(began).Round(time.Millisecond))
	return r
}

// URL is the go-redis URL of database 0. It carries no password: with
// WithRedisArgs("--requirepass", …) the client must add its own.
func (r *Redis) URL() string { return r.srv.URL() }

// Addr is host:port, as go-redis's Options.Addr wants it.
func (r *Redis) Addr() string { return r.srv.Addr() }
