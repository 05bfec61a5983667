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
	for {
		select {
		case b, open := <-c.frames:
			if !open {
				t.Fatalf("connection closed: %v", <-c.closed)
			}
			var d dashboardFrame
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("frame is not JSON: %v: %.200s", err, b)
			}
			if d.Type == "dashboard_update" && ok(&d) {
				return &d
			}
		case <-deadline:
			t.Fatalf("no matching dashboard_update within %v", timeout)
		}
	}
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
