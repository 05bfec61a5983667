package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/launch"
)

// RedisCluster is a throwaway Redis Cluster owned by one test: three
// primaries with one replica each (see ClusterReplicas),
// cluster-node-timeout 1 s.
type RedisCluster struct {
	srv   *launch.RedisCluster
	nodes map[*launch.Redis]*Redis
}

// ClusterOption changes how StartRedisCluster builds the cluster.
type ClusterOption func(*launch.RedisClusterConfig)

// ClusterNodes applies opts to every node of the cluster.
func ClusterNodes(opts ...RedisOption) ClusterOption {
	return func(c *launch.RedisClusterConfig) {
		for _, opt := range opts {
			opt(&c.Node)
		}
	}
}

// ClusterReplicas gives each primary n replicas instead of one.
func ClusterReplicas(n int) ClusterOption {
	return func(c *launch.RedisClusterConfig) { c.Replicas = n }
}

// StartRedisCluster starts the cluster for t and waits until it serves
// every slot and each replica streams from its primary. t.Cleanup kills
// the nodes and removes their folders; a failed test gets each node's log
// tail. Under -short t is skipped.
func StartRedisCluster(t testing.TB, opts ...ClusterOption) *RedisCluster {
	t.Helper()
	SkipIfShort(t, "a Redis Cluster")
	began := time.Now()
	var cfg launch.RedisClusterConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	srv, err := launch.StartRedisCluster(context.Background(), cfg)
	check(t, "start redis cluster", err)
	c := &RedisCluster{srv: srv, nodes: map[*launch.Redis]*Redis{}}
	for _, n := range srv.Nodes() {
		c.nodes[n] = &Redis{control: control{n}, srv: n}
		own(t, n)
	}
	t.Logf("testenv: redis cluster ready at %s in %s", c.URL(), time.Since(began).Round(time.Millisecond))
	return c
}

// URL is walcast's URL of the cluster, every node listed.
func (c *RedisCluster) URL() string { return c.srv.URL() }

// Nodes returns every node, primaries first as started.
func (c *RedisCluster) Nodes() []*Redis {
	var out []*Redis
	for _, n := range c.srv.Nodes() {
		out = append(out, c.nodes[n])
	}
	return out
}

// Owner returns the primary that serves key's slot now.
func (c *RedisCluster) Owner(t testing.TB, key string) *Redis {
	t.Helper()
	o, err := c.srv.Owner(context.Background(), key)
	check(t, "find the owner of "+key, err)
	return c.nodes[o]
}

// Failover has the replica of key's primary take over (CLUSTER FAILOVER,
// nothing acknowledged is lost) and waits until the cluster agrees and is
// healthy; it returns the old and the new primary.
func (c *RedisCluster) Failover(t testing.TB, key string) (old, new *Redis) {
	t.Helper()
	o, n, err := c.srv.Failover(context.Background(), key)
	check(t, "fail over the primary of "+key, err)
	return c.nodes[o], c.nodes[n]
}

// KillOwner crashes key's primary with SIGKILL and waits until its
// replica took over; it returns the killed and the new primary. Start
// the killed one again with its Start: it rejoins as a replica.
func (c *RedisCluster) KillOwner(t testing.TB, key string) (old, new *Redis) {
	t.Helper()
	o, n, err := c.srv.KillOwner(context.Background(), key)
	check(t, "kill the primary of "+key, err)
	return c.nodes[o], c.nodes[n]
}

// MigrateSlot moves key's slot, with its keys, to the primary to, and
// waits until the cluster agrees.
func (c *RedisCluster) MigrateSlot(t testing.TB, key string, to *Redis) {
	t.Helper()
	check(t, "migrate the slot of "+key, c.srv.MigrateSlot(context.Background(), key, to.srv))
}

// OtherPrimary returns a primary that does not serve key's slot.
func (c *RedisCluster) OtherPrimary(t testing.TB, key string) *Redis {
	t.Helper()
	owner := c.Owner(t, key)
	for _, n := range c.srv.Running() {
		info, err := n.DoString(context.Background(), "INFO", "replication")
		check(t, "read a node's role", err)
		if c.nodes[n] != owner && strings.Contains(info, "role:master") {
			return c.nodes[n]
		}
	}
	t.Fatalf("testenv: no primary other than %s", owner.Addr())
	return nil
}

// WaitHealthy waits until every running node agrees the cluster is ok and
// every replica streams from its primary.
func (c *RedisCluster) WaitHealthy(t testing.TB) {
	t.Helper()
	check(t, "wait for the redis cluster", c.srv.WaitHealthy(context.Background()))
}
