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

// dashboardFrame is a dashboard_update as clients decode it.
type dashboardFrame struct {
	Type          string `json:"type"`
	DashboardType string `json:"dashboard_type"`
	UserID        *int64 `json:"user_id"`
	CommitteeID   *int64 `json:"committee_id"`
	Data          struct {
		Guarantees struct {
			Strong, Medium, Weak, Unset, Total int64
		} `json:"guarantees"`
		AttendanceMarked int64 `json:"attendance_marked"`
		Attendance       struct {
			Attended int64
			Electors *int64
		} `json:"attendance"`
		Votes []struct {
			CandidateID int64 `json:"candidate_id"`
			Votes       int64 `json:"votes"`
		} `json:"votes"`
		TotalVotes int64 `json:"total_votes"`
	} `json:"data"`
}

func (d *dashboardFrame) key() string {
	switch {
	case d.UserID != nil:
		return fmt.Sprintf("%s:%d", d.DashboardType, *d.UserID)
	case d.CommitteeID != nil:
		return fmt.Sprintf("%s:%d", d.DashboardType, *d.CommitteeID)
	}
	return d.DashboardType
}

// dashboard waits for a dashboard_update for which ok returns true,
// skipping every other frame.
func (c *wsClient) dashboard(t *testing.T, timeout time.Duration, ok func(*dashboardFrame) bool) *dashboardFrame {
	t.Helper()
	deadline := time.After(timeout)
	var found *dashboardFrame
	c.await(t, func() <-chan time.Time { return deadline }, fmt.Sprintf("matching dashboard_update within %v", timeout), func(b []byte) bool {
		d := &dashboardFrame{} // a new one per frame: ok may keep it
		if err := json.Unmarshal(b, d); err != nil {
			t.Fatalf("frame is not JSON: %v: %.200s", err, b)
		}
		found = d
		return d.Type == "dashboard_update" && ok(d)
	})
	return found
}

func supervisorOf(committee int64, ok func(*dashboardFrame) bool) func(*dashboardFrame) bool {
	return func(d *dashboardFrame) bool {
		return d.DashboardType == "supervisor" && d.CommitteeID != nil && *d.CommitteeID == committee && ok(d)
	}
}

// A supervisor's dashboard follows a change within a second, and a
// 10,000-row UPDATE is recomputed a handful of times, not 10,000.
func TestDashboardFollowsChangesAndCoalescesBursts(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	sup := dial(t, app.addr, token(t, 50, "supervisor", 1), "")

	// Sent on connect: the current dashboard of committee 1, computed at start.
	first := sup.dashboard(t, 10*time.Second, supervisorOf(1, func(*dashboardFrame) bool { return true }))
	if first.Data.Attendance.Electors == nil || *first.Data.Attendance.Electors != 100 {
		t.Fatalf("committee 1 dashboard at connect: %+v, want 100 electors", first.Data)
	}

	start := time.Now()
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name, status) VALUES (1, 7, 'one', 'strong')`)
	// A liveness limit, not a speed target: the figure is logged (about
	// one --dashboard-interval on an idle machine).
	sup.dashboard(t, 10*time.Second, supervisorOf(1, func(d *dashboardFrame) bool { return d.Data.Guarantees.Strong == 1 }))
	t.Logf("dashboard latency after one change: %v", time.Since(start).Round(time.Millisecond))

	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name, status)
		SELECT 1, 7, 'bulk', 'medium' FROM generate_series(1, 9999)`)
	sup.dashboard(t, 20*time.Second, supervisorOf(1, func(d *dashboardFrame) bool { return d.Data.Guarantees.Total == 10000 }))
	// Let the builder settle, then count what one burst costs.
	time.Sleep(time.Second)
	before := app.app.Dashboards()
	start = time.Now()
	pg.Exec(t, `UPDATE guarantee SET status = 'weak' WHERE committee_id = 1`)
	sup.dashboard(t, 20*time.Second, supervisorOf(1, func(d *dashboardFrame) bool { return d.Data.Guarantees.Weak == 10000 }))
	t.Logf("dashboard after a 10,000-row UPDATE: %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond) // any round still due
	after := app.app.Dashboards()
	rounds, sups, admins := after.Rounds-before.Rounds, after.Supervisor-before.Supervisor, after.Admin-before.Admin
	t.Logf("10,000-row UPDATE: %d recompute rounds, %d supervisor and %d admin dashboards computed", rounds, sups, admins)
	if admins > 6 || sups > 6 || rounds > 6 {
		t.Errorf("a 10,000-row UPDATE caused %d rounds (%d supervisor, %d admin recomputations), want a handful", rounds, sups, admins)
	}
	if admins == 0 || sups == 0 {
		t.Errorf("the burst recomputed nothing: %+v -> %+v", before, after)
	}
}

// A connection receives only the dashboards its token allows: its
// committees' supervisor dashboards and its own personal dashboard; never
// another committee's, another user's or the admin dashboard.
func TestDashboardsReachOnlyTheirScope(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	u8 := dial(t, app.addr, token(t, 8, "", 2), "")
	admin := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 7, 'c1'), (2, 8, 'c2'), (3, 9, 'c3')`)
	pg.Exec(t, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (1, 1, 7), (2, 2, 8)`)
	pg.Exec(t, `INSERT INTO vote_count (committee_id, candidate_id, votes) VALUES (1, 1, 10), (2, 2, 20)`)

	// The admin sees the admin dashboard and every committee, and no
	// one's personal dashboard but its own.
	adminSaw := map[string]bool{}
	admin.dashboard(t, 10*time.Second, func(d *dashboardFrame) bool {
		adminSaw[d.key()] = true
		if d.DashboardType == "personal" && *d.UserID != 1 {
			t.Errorf("admin received user %d's personal dashboard", *d.UserID)
		}
		return d.DashboardType == "admin" && d.Data.TotalVotes == 30 && d.Data.Attendance.Attended == 2
	})
	// User 8 gets its committee's and its own.
	saw := map[string]*dashboardFrame{}
	deadline := time.After(3 * time.Second)
	for done := false; !done; {
		select {
		case b := <-u8.frames:
			var d dashboardFrame
			if json.Unmarshal(b, &d) == nil && d.Type == "dashboard_update" {
				saw[d.key()] = &d
			}
		case <-deadline:
			done = true
		}
	}
	for k := range saw {
		if k != "supervisor:2" && k != "personal:8" {
			t.Errorf("user 8 (committee 2) received dashboard %s", k)
		}
	}
	if d := saw["supervisor:2"]; d == nil || d.Data.TotalVotes != 20 || d.Data.Guarantees.Total != 1 {
		t.Errorf("user 8's committee dashboard: %+v", d)
	}
	if d := saw["personal:8"]; d == nil || d.Data.Guarantees.Total != 1 || d.Data.AttendanceMarked != 1 {
		t.Errorf("user 8's personal dashboard: %+v", d)
	}

	// A new connection gets the current dashboards after its welcome, then
	// nothing else until something changes; a subscribe to
	// dashboard_update sends them again.
	again := dial(t, app.addr, token(t, 8, "", 2), "")
	if m := again.next(t, 5*time.Second); m["type"] != "welcome" {
		t.Fatalf("first frame %v, want welcome", m)
	}
	got := map[string]bool{}
	for range 2 {
		m := again.next(t, 5*time.Second)
		got[fmt.Sprintf("%v:%v%v", m["dashboard_type"], valueOr(m["committee_id"]), valueOr(m["user_id"]))] = true
	}
	if !got["supervisor:2"] || !got["personal:8"] {
		t.Fatalf("dashboards on connect: %v, want supervisor:2 and personal:8", got)
	}
	if err := again.conn.Write(t.Context(), 1, []byte(`{"type":"subscribe","types":["dashboard_update"]}`)); err != nil {
		t.Fatal(err)
	}
	if m := again.next(t, 5*time.Second); m["type"] != "subscribed" {
		t.Fatalf("got %v, want subscribed", m)
	}
	for range 2 {
		if m := again.next(t, 5*time.Second); m["type"] != "dashboard_update" {
			t.Fatalf("got %v after subscribe, want the dashboards again", m)
		}
	}
	_ = adminSaw
}

func valueOr(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// Through Redis: a serve replica started after the dashboards were
// computed sends them on connect (from the dashboards hash), then their
// updates from the stream.
func TestDashboardsThroughRedisReachLateReplicas(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	capture := startMode(t, cmdCapture, modeConfig(t, cmdCapture, "--database-url", pg.URL(), "--redis-url", rd.URL()))
	capture.waitStreaming(t)
	pg.Exec(t, `INSERT INTO vote_count (committee_id, candidate_id, votes) VALUES (3, 1, 30)`)
	// Wait until the dashboards are stored, so the replica must read them
	// from the hash rather than see them arrive.
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := rdb.HGet(t.Context(), "walcast:changes:dashboards", "supervisor:3").Result()
		if strings.Contains(v, `"total_votes":30`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committee 3's dashboard not stored: %q (%+v)", v, capture.app.Dashboards())
		}
		time.Sleep(20 * time.Millisecond)
	}
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	waitReady(t, serve.addr)
	// The replica reads the hash as its stream reader starts, just after
	// it listens: a connection in that first moment may come too early.
	var c *wsClient
	var d *dashboardFrame
	for attempt := 0; d == nil; attempt++ {
		c = dial(t, serve.addr, token(t, 5, "supervisor", 3), "")
		if m := c.next(t, 5*time.Second); m["type"] != "welcome" {
			t.Fatalf("got %v, want welcome", m)
		}
		select {
		case b := <-c.frames:
			var f dashboardFrame
			if json.Unmarshal(b, &f) == nil && f.Type == "dashboard_update" {
				d = &f
			}
		case <-time.After(500 * time.Millisecond):
		}
		if d == nil && attempt == 10 {
			t.Fatal("a replica started after the dashboards were stored does not send them on connect")
		}
	}
	if d.DashboardType != "supervisor" || d.Data.TotalVotes != 30 {
		t.Fatalf("committee 3 dashboard on connect: %+v", d.Data)
	}
	pg.Exec(t, `UPDATE vote_count SET votes = 45 WHERE committee_id = 3`)
	c.dashboard(t, 5*time.Second, supervisorOf(3, func(d *dashboardFrame) bool { return d.Data.TotalVotes == 45 }))
}

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
