package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// The database's history stops continuing the stored one (a dropped slot,
// a new cluster): walcast refuses to start with the fix, and with
// --new-epoch every client, of every replica, gets resync_required and then
// the new changes; none is dropped as already stored.

// waitExit waits for a walcast that is expected to stop by itself and
// returns its error.
func (r *running) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.cancel()
		r.cancel = nil
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("walcast did not stop within 30 s: %+v", r.app.Status())
	}
	return nil
}

// nextOf returns the next frame of type typ, skipping welcome, dashboard and
// subscription frames; any other frame fails the test.
func (c *wsClient) nextOf(t *testing.T, typ string) map[string]any {
	t.Helper()
	for {
		m := c.next(t, 15*time.Second)
		switch m["type"] {
		case typ:
			return m
		case "welcome", "dashboard_update", "subscribed":
			continue
		}
		t.Fatalf("got %v, want %s", m, typ)
	}
}

func electorName(m map[string]any) any { return m["data"].(map[string]any)["elector_name"] }

// changeAfterResyncs returns the next change: a client that lived through
// a new epoch may be told to resync more than once (by its replay and by
// the epoch marker), which is honest, and never silent.
func (c *wsClient) changeAfterResyncs(t *testing.T) map[string]any {
	t.Helper()
	for {
		if m := c.change(t); m["type"] != "resync_required" {
			return m
		}
	}
}

func TestDroppedSlotWithRedisRefusesThenStartsANewEpoch(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	args := []string{"--redis-url", rd.URL(), "--dashboard-interval", "0"}
	app, c := startStreamingAdmin(t, pg.URL(), args...)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'before')`)
	seen := c.change(t)["id"].(string)
	app.stop(t)
	waitSlotInactive(t, pg.URL(), "walcast")
	pg.Exec(t, `SELECT pg_drop_replication_slot('walcast')`)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'while no slot')`)

	// A serve replica with a client that is up to date.
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	sc := dial(t, serve.addr, token(t, 1, "admin"), "since="+seen)

	refused := startApp(t, testConfig(t, pg.URL(), args...))
	err := refused.waitExit(t)
	if err == nil || !strings.Contains(err.Error(), "replication slot walcast does not exist") || !strings.Contains(err.Error(), "--new-epoch") {
		t.Fatalf("walcast with a dropped slot and stored changes: %v, want a refusal naming --new-epoch", err)
	}
	var slots int
	queryRow(t, pg.URL(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'walcast'", nil, &slots)
	if slots != 0 {
		t.Fatalf("the refusing walcast created the slot: a second start would not notice the gap")
	}

	app = startApp(t, testConfig(t, pg.URL(), append(args, "--new-epoch")...))
	app.waitStreaming(t)
	if m := sc.nextOf(t, "resync_required"); m["position"] != "0-0" {
		t.Errorf("resync at the new epoch: %v, want position 0-0", m)
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after')`)
	if got := electorName(sc.changeAfterResyncs(t)); got != "after" {
		t.Fatalf("serve replica's client after the new epoch got %v, want the new change", got)
	}
	for _, addr := range []string{serve.addr, app.addr} {
		old := dial(t, addr, token(t, 1, "admin"), "since="+seen)
		if m := old.nextOf(t, "resync_required"); m["reason"] == "" {
			t.Errorf("%s: resume from an earlier epoch's id: %v", addr, m)
		}
	}
	if got := electorName(dial(t, serve.addr, token(t, 1, "admin"), "since=0-0").change(t)); got != "after" {
		t.Errorf("since=0-0 in the new epoch replayed %v first, want the new epoch's first change", got)
	}
}

// A new cluster behind the same Redis: its positions are below the stored
// ones, and its changes are delivered, not taken for duplicates.
func TestNewClusterWithTheSameRedis(t *testing.T) {
	old := electionDB(t)
	rd := testenv.StartRedis(t)
	args := []string{"--redis-url", rd.URL(), "--dashboard-interval", "0"}
	app, c := startStreamingAdmin(t, old.URL(), args...)
	var top string
	for i := 0; i < 4; i++ { // move the old cluster's WAL well ahead of a new one's
		old.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'old')`)
		top = c.change(t)["id"].(string)
		old.Exec(t, `SELECT pg_switch_wal()`)
	}
	app.stop(t)

	fresh := electionDB(t)
	refused := startApp(t, testConfig(t, fresh.URL(), args...))
	// testenv's clusters are copies of one template, so they share a system
	// identifier (like clones of one base backup): the WAL end tells.
	if err := refused.waitExit(t); err == nil || !strings.Contains(err.Error(), "does not continue") || !strings.Contains(err.Error(), "--new-epoch") {
		t.Fatalf("walcast on another cluster with the same Redis: %v, want a refusal naming --new-epoch", err)
	}
	app = startApp(t, testConfig(t, fresh.URL(), append(args, "--new-epoch")...))
	app.waitStreaming(t)
	resumed := dial(t, app.addr, token(t, 1, "admin"), "since="+top)
	resumed.nextOf(t, "resync_required")
	fresh.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'fresh')`)
	m := resumed.changeAfterResyncs(t)
	if electorName(m) != "fresh" {
		t.Fatalf("got %v, want the new cluster's change", m)
	}
	got, _ := schema.ParsePosition(m["id"].(string))
	was, _ := schema.ParsePosition(top)
	if !got.Less(was) {
		t.Errorf("the new cluster's position %s is not below the old %s: the test does not show what it means to", got, was)
	}
}

// dropSlotUnder drops the slot while walcast streams from it: it ends the
// walsender until the drop wins the race with walcast's reconnection.
func dropSlotUnder(t *testing.T, dbURL string) {
	t.Helper()
	withConn(t, dbURL, 20*time.Second, func(ctx context.Context, conn *pgx.Conn) {
		for ctx.Err() == nil {
			_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walcast' AND active_pid IS NOT NULL`)
			if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot('walcast')`); err == nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatal("could not drop the slot within 20 s")
	})
}

// startStreamingAdmin starts `walcast run` on dbURL with args, waits until
// it streams, and connects an admin client.
func startStreamingAdmin(t *testing.T, dbURL string, args ...string) (*running, *wsClient) {
	t.Helper()
	app := startApp(t, testConfig(t, dbURL, args...))
	app.waitStreaming(t)
	return app, dial(t, app.addr, token(t, 1, "admin"), "")
}

// The in-process bus: the slot is dropped under a running walcast, which
// reconnects to a database whose history no longer continues what it
// delivered.
func TestDroppedSlotWithTheInProcessBus(t *testing.T) {
	pg := electionDB(t)
	args := []string{"--dashboard-interval", "0"}
	app := startApp(t, testConfig(t, pg.URL(), args...))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'before')`)
	c.change(t)
	dropSlotUnder(t, pg.URL())
	if err := app.waitExit(t); err == nil || !strings.Contains(err.Error(), "--new-epoch") {
		t.Fatalf("walcast run after its slot was dropped: %v, want a refusal naming --new-epoch", err)
	}

	app = startApp(t, testConfig(t, pg.URL(), append(args, "--new-epoch")...))
	app.waitStreaming(t)
	c = dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'second')`)
	seen := c.change(t)["id"].(string)
	dropSlotUnder(t, pg.URL())
	if m := c.nextOf(t, "resync_required"); m["position"] != "0-0" {
		t.Errorf("resync at the new epoch: %v, want position 0-0", m)
	}
	for deadline := time.Now().Add(30 * time.Second); !app.app.Status().Streaming || app.app.Status().Sessions < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("walcast did not stream again: %+v", app.app.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'third')`)
	if got := electorName(c.changeAfterResyncs(t)); got != "third" {
		t.Fatalf("after the new epoch got %v, want the new change", got)
	}
	dial(t, app.addr, token(t, 1, "admin"), "since="+seen).nextOf(t, "resync_required")
}
