package main

import (
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// Replicated acknowledgement: with --redis-min-replicas 1 and a Redis
// replica, changes flow and every committed row reaches a resuming client
// exactly once; a replica that stops acknowledging (SIGSTOP) turns
// /readyz red with the reason and stops the slot's confirmed position,
// and once it runs again everything is confirmed and delivered once.
func TestMinReplicasHoldsConfirmsUntilReplicaAcks(t *testing.T) {
	pg := electionDB(t)
	primary := testenv.StartRedis(t)
	replica := testenv.StartRedis(t, testenv.AsReplicaOf(primary))
	r := &silenceRig{pg: pg}
	r.app, r.logs = startLogged(t, cmdRun, testConfig(t, pg.URL(), "--redis-url", primary.URL(),
		"--redis-min-replicas", "1", "--redis-replica-timeout", "300ms", "--redis-timeout", "2s"))
	r.app.waitStreaming(t)
	waitReady(t, r.app.addr)
	r.client, r.stopClient = startResumingClient(t, r.app.addr)
	r.writer = startRowWriter(t, pg.URL(), 3*time.Millisecond, t.Logf)

	// (a) Changes flow while the replica acknowledges.
	r.waitDelivered(t, 0, 20*time.Second)
	if v, ok := metric(t, r.app.addr, "walcast_redis_replicas_acked"); !ok || v < 1 {
		t.Fatalf("walcast_redis_replicas_acked = %v (present %v), want 1", v, ok)
	}

	// (d) The replica falls behind past the wait timeout.
	replica.Pause(t)
	paused := true
	defer func() {
		if paused {
			replica.Resume(t)
		}
	}()
	var body string
	eventually(t, 10*time.Second, "/readyz red with the replicas' reason", func() bool {
		code, b := httpGet(t, "http://"+r.app.addr+"/readyz")
		body = b
		return code != 200 && strings.Contains(b, "replicas behind")
	})
	t.Logf("/readyz while the replica is paused: %s", body)
	// Appends are serialized: once one waited in vain, nothing after it is
	// confirmed until a wait succeeds.
	confirmed := r.app.app.Status().Confirmed
	written := r.writer.written.Load()
	eventually(t, 10*time.Second, "rows written while the replica is paused", func() bool { return r.writer.written.Load() > written+100 })
	time.Sleep(time.Second) // a window for a wrong confirmation to show
	if now := r.app.app.Status().Confirmed; now != confirmed {
		t.Fatalf("capture confirmed %X, then %X, while no replica acknowledged", confirmed, now)
	}
	if slot := parseLSNText(t, confirmedFlush(t, pg.URL())); uint64(slot) > confirmed {
		t.Fatalf("the slot's confirmed_flush_lsn %X is past capture's confirmed position %X", slot, confirmed)
	}
	if v, ok := metric(t, r.app.addr, "walcast_redis_replica_lag_bytes"); !ok || v <= 0 {
		t.Errorf("walcast_redis_replica_lag_bytes = %v (present %v) while the replica is paused, want > 0", v, ok)
	}

	replica.Resume(t)
	paused = false
	before := r.writer.written.Load()
	eventually(t, 20*time.Second, "/readyz green after the replica resumed", func() bool {
		code, _ := httpGetNoFail("http://" + r.app.addr + "/readyz")
		return code == 200
	})
	r.waitDelivered(t, before, 20*time.Second)
	eventually(t, 20*time.Second, "the slot confirmed past the pause", func() bool {
		return uint64(parseLSNText(t, confirmedFlush(t, pg.URL()))) > confirmed
	})
	r.finish(t)
}

// confirmedFlush is the walcast slot's confirmed_flush_lsn.
func confirmedFlush(t *testing.T, dbURL string) string {
	t.Helper()
	var lsn string
	queryRow(t, dbURL, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'walcast'", nil, &lsn)
	return lsn
}
