package main

import (
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// clusterStreamKey is walcast's stream key in a Redis Cluster: every key
// of walcast shares its hash tag, hence its slot.
const clusterStreamKey = "{walcast:changes}"

// startClusterRig runs walcast (run, args added) against the cluster rc,
// with a writer committing one row per transaction and a resuming client,
// and waits until rows are delivered.
func startClusterRig(t *testing.T, rc *testenv.RedisCluster, args ...string) *silenceRig {
	t.Helper()
	pg := electionDB(t)
	r := &silenceRig{pg: pg}
	r.app, r.logs = startLogged(t, cmdRun, testConfig(t, pg.URL(), append([]string{"--redis-url", rc.URL(), "--redis-timeout", "2s"}, args...)...))
	r.app.waitStreaming(t)
	waitReady(t, r.app.addr)
	r.client, r.stopClient = startResumingClient(t, r.app.addr)
	r.writer = startRowWriter(t, pg.URL(), 3*time.Millisecond, t.Logf)
	r.waitDelivered(t, 0, 20*time.Second)
	return r
}

// Against a Redis Cluster (three primaries, a replica each), under a
// steady write load, the primary that owns walcast's slot hands over to
// its replica (CLUSTER FAILOVER), then the slot migrates to another
// primary; a client that resumes after each drop ends with every
// committed row exactly once and no id twice.
func TestRedisClusterFailoverAndMigrationLoseNothing(t *testing.T) {
	waitsMostly(t)
	rc := testenv.StartRedisCluster(t)
	r := startClusterRig(t, rc)
	steady := func() { time.Sleep(time.Second) } // writes go on

	steady()
	at, before := time.Now(), r.writer.written.Load()
	old, new := rc.Failover(t, clusterStreamKey)
	t.Logf("CLUSTER FAILOVER: %s took over from %s in %v", new.Addr(), old.Addr(), time.Since(at).Round(time.Millisecond))
	r.waitDelivered(t, before, 20*time.Second)
	t.Logf("rows flow again %v after the failover began", time.Since(at).Round(time.Millisecond))

	steady()
	at, before = time.Now(), r.writer.written.Load()
	to := rc.OtherPrimary(t, clusterStreamKey)
	rc.MigrateSlot(t, clusterStreamKey, to)
	t.Logf("slot migrated to %s in %v", to.Addr(), time.Since(at).Round(time.Millisecond))
	r.waitDelivered(t, before, 20*time.Second)
	t.Logf("rows flow again %v after the migration began", time.Since(at).Round(time.Millisecond))
	r.finish(t)
}

// The primary that owns walcast's slot crashes (SIGKILL) under load, with
// --redis-min-replicas 1: appends count only once its replica holds them,
// so the replica the cluster promotes holds every confirmed change, and a
// resuming client ends with every committed row exactly once; /readyz is
// red until the promoted primary has a replica again.
func TestRedisClusterPrimaryCrashLosesNothing(t *testing.T) {
	waitsMostly(t)
	rc := testenv.StartRedisCluster(t)
	r := startClusterRig(t, rc, "--redis-min-replicas", "1", "--redis-replica-timeout", "500ms")
	time.Sleep(time.Second) // writes go on

	at, before := time.Now(), r.writer.written.Load()
	old, new := rc.KillOwner(t, clusterStreamKey)
	t.Logf("killed %s; the cluster promoted %s in %v", old.Addr(), new.Addr(), time.Since(at).Round(time.Millisecond))
	// Until a replica holds them, appends to the new primary count for
	// nothing (/readyz says why): the old primary, started again, rejoins
	// as its replica.
	eventually(t, 10*time.Second, "/readyz red after the crash", func() bool {
		code, _ := httpGetNoFail("http://" + r.app.addr + "/readyz")
		return code != 200
	})
	_, body := httpGet(t, "http://"+r.app.addr+"/readyz")
	t.Logf("/readyz after the crash: %s", body)
	old.Start(t)
	r.waitDelivered(t, before, 30*time.Second)
	t.Logf("rows flow again %v after the crash", time.Since(at).Round(time.Millisecond))
	eventually(t, 20*time.Second, "/readyz green once the old primary replicates the new one", func() bool {
		code, _ := httpGetNoFail("http://" + r.app.addr + "/readyz")
		return code == 200
	})
	rc.WaitHealthy(t)
	r.finish(t)
}

// With two replicas per primary, the replica the cluster promotes after a
// crash of walcast's primary has a replica of its own at once (the other
// one follows it): with --redis-min-replicas 1 confirmations resume
// without anyone restarting the crashed node, and nothing is lost or
// duplicated.
func TestRedisClusterPrimaryCrashTwoReplicas(t *testing.T) {
	waitsMostly(t)
	rc := testenv.StartRedisCluster(t, testenv.ClusterReplicas(2))
	r := startClusterRig(t, rc, "--redis-min-replicas", "1", "--redis-replica-timeout", "500ms")
	time.Sleep(time.Second) // writes go on

	at, before := time.Now(), r.writer.written.Load()
	old, new := rc.KillOwner(t, clusterStreamKey)
	t.Logf("killed %s; the cluster promoted %s in %v", old.Addr(), new.Addr(), time.Since(at).Round(time.Millisecond))
	r.waitDelivered(t, before, 30*time.Second)
	t.Logf("rows flow again %v after the crash", time.Since(at).Round(time.Millisecond))
	eventually(t, 20*time.Second, "/readyz green with the crashed primary still down", func() bool {
		code, _ := httpGetNoFail("http://" + r.app.addr + "/readyz")
		return code == 200
	})
	r.finish(t)
}
