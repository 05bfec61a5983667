package launch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RedisCluster is a throwaway Redis Cluster: primaries that split the
// 16384 hash slots evenly, each with its replicas, every node a
// redis-server on a free 127.0.0.1 port in its own folder. It is set up
// with cluster commands (ADDSLOTSRANGE, MEET, REPLICATE), so it needs
// only redis-server, 7.0 or newer.
type RedisCluster struct {
	nodes []*Redis // primaries first, then each primary's replicas in turn
}

// RedisClusterConfig says how StartRedisCluster builds the cluster.
type RedisClusterConfig struct {
	Primaries int           // default 3
	Replicas  int           // per primary; default 1, -1 for none
	Node      RedisConfig   // every node's settings (Cluster is implied)
	Timeout   time.Duration // cluster-node-timeout; default 1 s, so that a killed primary fails over within seconds
}

// StartRedisCluster starts the nodes, joins them and waits until the
// cluster serves every slot and each replica streams from its primary.
// On error nothing is left behind.
func StartRedisCluster(ctx context.Context, cfg RedisClusterConfig) (_ *RedisCluster, err error) {
	if cfg.Primaries <= 0 {
		cfg.Primaries = 3
	}
	switch {
	case cfg.Replicas == 0:
		cfg.Replicas = 1
	case cfg.Replicas < 0:
		cfg.Replicas = 0
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	node := cfg.Node
	node.Cluster, node.ClusterNodeTimeout = true, cfg.Timeout
	c := &RedisCluster{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for range cfg.Primaries * (1 + cfg.Replicas) {
		r, err := StartRedis(ctx, node)
		if err != nil {
			return nil, fmt.Errorf("start a cluster node: %w", err)
		}
		c.nodes = append(c.nodes, r)
	}
	if err := c.join(ctx, cfg.Primaries); err != nil {
		return nil, err
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// join gives each primary its share of the slots, introduces every node
// to the first, and makes the replicas replicate their primaries.
func (c *RedisCluster) join(ctx context.Context, primaries int) error {
	ids := make([]string, len(c.nodes))
	for i, r := range c.nodes {
		id, err := r.DoString(ctx, "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		ids[i] = id
	}
	for i := range primaries {
		lo, hi := i*16384/primaries, (i+1)*16384/primaries-1
		if _, err := c.nodes[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return err
		}
	}
	for _, r := range c.nodes[1:] {
		if _, err := r.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.nodes[0].Port()), strconv.Itoa(c.nodes[0].busPort)); err != nil {
			return err
		}
	}
	err := poll(ctx, readyTimeout, func() error {
		for _, r := range c.nodes {
			nodes, err := r.DoString(ctx, "CLUSTER", "NODES")
			if err != nil {
				return err
			}
			if n := strings.Count(strings.TrimSpace(nodes), "\n") + 1; n < len(c.nodes) {
				return fmt.Errorf("node %s knows %d of %d nodes", r.Addr(), n, len(c.nodes))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	for i, r := range c.nodes[primaries:] {
		if _, err := r.Do(ctx, "CLUSTER", "REPLICATE", ids[i%primaries]); err != nil {
			return err
		}
	}
	return nil
}

// WaitHealthy waits until every running node says the cluster is ok and
// agrees on which node serves each primary's slots, and every primary has
// its replicas streaming (online) from it.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	err := poll(ctx, readyTimeout, func() error {
		var want string
		for _, r := range c.Running() {
			info, err := r.DoString(ctx, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("node %s: cluster not ok", r.Addr())
			}
			owners, err := c.slotOwners(ctx, r)
			if err != nil {
				return err
			}
			if want == "" {
				want = owners
			} else if owners != want {
				return fmt.Errorf("nodes disagree on the slots' owners: %s and %s", want, owners)
			}
		}
		return c.replicasOnline(ctx)
	})
	if err != nil {
		return fmt.Errorf("wait for a healthy redis cluster: %w", err)
	}
	return nil
}

// replicasOnline checks that every running node the primaries count as a
// replica streams from its primary, and that every running replica is
// counted.
func (c *RedisCluster) replicasOnline(ctx context.Context) error {
	online, replicas := 0, 0
	for _, r := range c.Running() {
		info, err := r.DoString(ctx, "INFO", "replication")
		if err != nil {
			return err
		}
		if strings.Contains(info, "role:slave") {
			replicas++
		}
		online += strings.Count(info, ",state=online,")
	}
	if online != replicas {
		return fmt.Errorf("%d of %d replicas stream from their primary", online, replicas)
	}
	return nil
}

// slotOwners describes, as r sees it, which node serves each slot range.
func (c *RedisCluster) slotOwners(ctx context.Context, r *Redis) (string, error) {
	v, err := r.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return "", err
	}
	ranges, _ := v.([]any)
	var parts []string
	for _, x := range ranges {
		rg, ok := x.([]any)
		if !ok || len(rg) < 3 {
			return "", fmt.Errorf("unreadable CLUSTER SLOTS answer %v", v)
		}
		primary, _ := rg[2].([]any)
		if len(primary) < 2 {
			return "", fmt.Errorf("unreadable CLUSTER SLOTS answer %v", v)
		}
		parts = append(parts, fmt.Sprintf("%v-%v@%v", rg[0], rg[1], primary[1]))
	}
	slices.Sort(parts)
	return strings.Join(parts, " "), nil
}

// URL is the walcast URL of the cluster: every node, primaries and
// replicas, so that a client finds the cluster whichever are up.
func (c *RedisCluster) URL() string {
	addrs := make([]string, len(c.nodes))
	for i, r := range c.nodes {
		addrs[i] = r.Addr()
	}
	return "redis-cluster://" + strings.Join(addrs, ",")
}

// Nodes returns every node, primaries first as started (a failover
// changes the roles, not this order).
func (c *RedisCluster) Nodes() []*Redis { return c.nodes }

// Running returns the nodes whose process runs.
func (c *RedisCluster) Running() []*Redis {
	var out []*Redis
	for _, r := range c.nodes {
		if r.running() {
			out = append(out, r)
		}
	}
	return out
}

// Owner returns the primary that serves key's slot, as the first running
// node sees it.
func (c *RedisCluster) Owner(ctx context.Context, key string) (*Redis, error) {
	run := c.Running()
	if len(run) == 0 {
		return nil, errors.New("no cluster node runs")
	}
	return c.ownerAt(ctx, run[0], key)
}

// ownerAt returns the primary that serves key's slot, as r sees it.
func (c *RedisCluster) ownerAt(ctx context.Context, r *Redis, key string) (*Redis, error) {
	slot, err := r.Do(ctx, "CLUSTER", "KEYSLOT", key)
	if err != nil {
		return nil, err
	}
	v, err := r.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return nil, err
	}
	ranges, _ := v.([]any)
	for _, x := range ranges {
		rg, _ := x.([]any)
		if len(rg) < 3 {
			continue
		}
		lo, _ := rg[0].(int64)
		hi, _ := rg[1].(int64)
		s, _ := slot.(int64)
		if primary, _ := rg[2].([]any); s >= lo && s <= hi && len(primary) >= 2 {
			port, _ := primary[1].(int64)
			return c.byPort(int(port))
		}
	}
	return nil, fmt.Errorf("no node serves slot %v", slot)
}

// ReplicaOf returns a running replica of primary, from its INFO.
func (c *RedisCluster) ReplicaOf(ctx context.Context, primary *Redis) (*Redis, error) {
	info, err := primary.DoString(ctx, "INFO", "replication")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "slave") || !strings.Contains(line, "port=") {
			continue
		}
		for _, f := range strings.Split(strings.TrimSpace(line), ",") {
			if p, ok := strings.CutPrefix(f, "port="); ok {
				port, _ := strconv.Atoi(p)
				return c.byPort(port)
			}
		}
	}
	return nil, fmt.Errorf("primary %s has no replica", primary.Addr())
}

func (c *RedisCluster) byPort(port int) (*Redis, error) {
	for _, r := range c.nodes {
		if r.Port() == port {
			return r, nil
		}
	}
	return nil, fmt.Errorf("no cluster node listens on port %d", port)
}

// Close kills every node and removes their folders.
func (c *RedisCluster) Close() error {
	var errs []error
	for _, r := range c.nodes {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}
