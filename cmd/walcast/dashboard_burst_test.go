package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
)

// A dashboard burst (one personal dashboard per user at start-up and
// after a TRUNCATE: 20,000 of them) with a small history and a small
// client window: an idle client stays connected (no 4008), a client that
// was away resumes every change it missed without resync_required, the
// history still holds the changes, and every dashboard reaches its
// owner. Both buses: the in-process bus keeps dashboards out of its ring,
// Redis keeps them out of the stream's --history budget, and
// --dashboard-batch spreads the burst over rounds smaller than the window.
func TestDashboardBurstKeepsHistoryAndClients(t *testing.T) {
	for _, bus := range []string{"memory", "redis"} {
		t.Run(bus, func(t *testing.T) { testDashboardBurst(t, bus) })
	}
}

// testDashboardBurst runs the burst test on bus, "memory" or "redis".
func testDashboardBurst(t *testing.T, bus string) {
	// 20,000 users in process; 10,000 through Redis (with history to
	// match), where each dashboard costs a script call's share and the
	// test reads the whole stream back.
	users, history := 20000, 6000
	if bus == "redis" {
		users, history = 10000, 3000
	}
	pg := electionDB(t)
	// One guarantee per user, before start: the first round must compute
	// 20,000 personal dashboards.
	pg.Exec(t, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name)
		SELECT 1 + g %% 3, 100000 + g, 'e' || g FROM generate_series(1, %d) g`, users))
	args := []string{"--history", fmt.Sprint(history), "--client-window", "4096", "--dashboard-interval", "40ms", "--dashboard-batch", "400"}
	var rdb *redis.Client
	if bus == "redis" {
		rd := testenv.StartRedis(t)
		args = append(args, "--redis-url", rd.URL())
		rdb = redis.NewClient(&redis.Options{Addr: rd.Addr()})
		defer rdb.Close()
	}
	start := time.Now()
	app := startApp(t, testConfig(t, pg.URL(), args...))
	app.waitStreaming(t)
	// Sits through both bursts receiving nothing: user 5 has no rows.
	idle := dial(t, app.addr, token(t, 5, ""), "")
	// The owner of the last user's dashboard.
	owner := dial(t, app.addr, token(t, int64(100000+users), ""), "")
	owner.dashboard(t, 60*time.Second, func(d *dashboardFrame) bool {
		return d.DashboardType == "personal" && *d.UserID == int64(100000+users) && d.Data.Guarantees.Total == 1
	})
	eventually(t, 60*time.Second, "the start-up burst computed", func() bool { return app.app.Dashboards().Personal >= uint64(users) })
	t.Logf("start-up: %d personal dashboards in %v (%d rounds)", users, time.Since(start).Round(time.Millisecond), app.app.Dashboards().Rounds)

	// A client sees one change, leaves, and comes back after the burst.
	away := dial(t, app.addr, token(t, 7, "", 1), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 7, 'before')`)
	seen := away.change(t)["id"].(string)
	away.conn.CloseNow()

	before := app.app.Dashboards().Personal
	start = time.Now()
	pg.Exec(t, `TRUNCATE guarantee`)
	const missed = 50
	for i := range missed {
		pg.Exec(t, fmt.Sprintf(`INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (1, %d, 7)`, i))
	}
	// Every user's dashboard is recomputed once more, in rounds.
	eventually(t, 60*time.Second, "the TRUNCATE burst computed", func() bool {
		return app.app.Dashboards().Personal >= before+uint64(users)
	})
	t.Logf("TRUNCATE: %d personal dashboards in %v", users, time.Since(start).Round(time.Millisecond))
	owner.dashboard(t, 30*time.Second, func(d *dashboardFrame) bool {
		return d.DashboardType == "personal" && *d.UserID == int64(100000+users) && d.Data.Guarantees.Total == 0
	})

	back := dial(t, app.addr, token(t, 7, "", 1), "since="+seen)
	expectResumed(t, back, seen, missed, users)
	// The idle client is still there.
	if err := idle.conn.Write(t.Context(), 1, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	for m := idle.next(t, 10*time.Second); m["type"] != "pong"; m = idle.next(t, 10*time.Second) {
	}
	if v, _ := metric(t, app.addr, "walcast_slow_consumer_closes_total"); v != 0 {
		t.Errorf("%v clients closed with 4008 during the burst", v)
	}
	if rdb != nil {
		checkBurstStream(t, rdb, 2+missed, users, history)
	}
}

// expectResumed reads the missed attendance changes of a client resuming
// from seen after a burst of users dashboards, with no resync_required.
func expectResumed(t *testing.T, back *wsClient, seen string, missed, users int) {
	t.Helper()
	got := 0
	deadline := time.After(30 * time.Second)
	for got < missed {
		select {
		case b, open := <-back.frames:
			if !open {
				t.Fatalf("resuming client closed: %v", <-back.closed)
			}
			var f struct{ Type, Table string }
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatal(err)
			}
			switch {
			case f.Type == "resync_required":
				t.Fatalf("resume from %s after a burst of %d dashboards: %s", seen, users, b)
			case f.Type == "attendance_update":
				got++
			}
		case <-deadline:
			t.Fatalf("resume after the burst delivered %d of the %d missed changes", got, missed)
		}
	}
}

// checkBurstStream checks that the Redis stream still holds the test's
// wantChanges changes, and the dashboards hash every user's newest
// dashboard: all zero after the TRUNCATE.
func checkBurstStream(t *testing.T, rdb *redis.Client, wantChanges, users, history int) {
	t.Helper()
	entries, err := rdb.XRange(t.Context(), "walcast:changes", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	changes, dashboards := 0, 0
	for _, e := range entries {
		if _, ok := e.Values["k"]; ok {
			dashboards++
		} else {
			changes++
		}
	}
	t.Logf("stream: %d changes and %d dashboards (--history %d)", changes, dashboards, history)
	if changes < wantChanges {
		t.Errorf("the stream kept %d changes, want the %d of this test", changes, wantChanges)
	}
	all, err := rdb.HGetAll(t.Context(), "walcast:changes:dashboards").Result()
	if err != nil {
		t.Fatal(err)
	}
	stale := 0
	for k, v := range all {
		if strings.HasPrefix(k, "personal:") && k != "personal:7" && !strings.Contains(v, `"total":0`) {
			stale++
		}
	}
	if stale > 0 || len(all) < users {
		t.Errorf("dashboards hash: %d entries, %d personal dashboards not updated after the TRUNCATE", len(all), stale)
	}
}
