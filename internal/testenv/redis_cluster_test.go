package testenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
)

// The cluster serves a key through a CLUSTER FAILOVER, a migration of its
// slot and the crash of its primary, each leaving the cluster healthy
// with the key's value in place.
func TestRedisClusterFailoverMigrationKill(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	ctx := context.Background()
	addrs := strings.Split(strings.TrimPrefix(c.URL(), "redis-cluster://"), ",")
	if len(addrs) != 6 {
		t.Fatalf("%d nodes, want 6: %s", len(addrs), c.URL())
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer rdb.Close()
	const key = "{walcast:changes}"
	check := func(what string, want int64) {
		t.Helper()
		// go-redis learns of a crashed node from the next reload of the
		// slot map, which a refused connection does not trigger.
		deadline := time.Now().Add(10 * time.Second)
		for err := rdb.Incr(ctx, key+":n").Err(); err != nil; err = rdb.Incr(ctx, key+":n").Err() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			rdb.ReloadState(ctx)
			time.Sleep(100 * time.Millisecond)
		}
		if got, err := rdb.Get(ctx, key+":n").Int64(); err != nil || got != want {
			t.Fatalf("%s: %d, %v; want %d", what, got, err, want)
		}
	}
	check("at start", 1)

	old, new := c.Failover(t, key)
	if c.Owner(t, key) != new || old == new {
		t.Fatalf("after the failover %s serves the key, want %s", c.Owner(t, key).Addr(), new.Addr())
	}
	check("after CLUSTER FAILOVER", 2)

	to := c.OtherPrimary(t, key)
	c.MigrateSlot(t, key, to)
	if c.Owner(t, key) != to {
		t.Fatalf("after the migration %s serves the key, want %s", c.Owner(t, key).Addr(), to.Addr())
	}
	check("after the migration", 3)

	if n, err := rdb.Do(ctx, "WAIT", 1, 5000).Int64(); err != nil || n < 0 {
		t.Logf("WAIT: %d, %v", n, err)
	}
	killed, promoted := c.KillOwner(t, key)
	if c.Owner(t, key) != promoted || killed != to {
		t.Fatalf("after the kill %s serves the key, want %s", c.Owner(t, key).Addr(), promoted.Addr())
	}
	check("after the primary's crash", 4)
	killed.Start(t)
	c.WaitHealthy(t)
}
