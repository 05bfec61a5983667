package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var (
	idPattern = regexp.MustCompile(`^[0-9]+-[0-9]+$`)
	tsPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)
)

// normalize checks the fields that vary from run to run (id, version,
// timestamp, and the given timestamp columns of data) and replaces them
// with placeholders, so that the rest can be compared exactly.
func normalize(t *testing.T, m map[string]any, timeCols ...string) string {
	t.Helper()
	id, _ := m["id"].(string)
	if !idPattern.MatchString(id) {
		t.Errorf("id %q is not LSN-ordinal", id)
	}
	lsn, _, _ := strings.Cut(id, "-")
	if v, _ := m["version"].(string); v != lsn {
		t.Errorf("version %q is not the commit LSN of id %q", v, id)
	}
	ts, _ := m["timestamp"].(string)
	if !tsPattern.MatchString(ts) {
		t.Errorf("timestamp %q is not RFC 3339 UTC with microseconds", ts)
	}
	m["id"], m["version"], m["timestamp"] = "ID", "LSN", "TS"
	for _, obj := range []any{m["data"], m["old"]} {
		row, _ := obj.(map[string]any)
		for _, key := range []string{"vote_count", "election_results"} {
			if inner, ok := row[key].(map[string]any); ok {
				row = inner
			}
		}
		for _, col := range timeCols {
			if v, ok := row[col].(string); ok {
				if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
					t.Errorf("%s = %q is not RFC 3339: %v", col, v, err)
				}
				row[col] = "T"
			}
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// typedMessageSteps are the statements of TestTrackedTablesBecomeTypedMessages
// and the message each must produce, normalized (see normalize).
var typedMessageSteps = []struct {
	name     string
	sql      string
	timeCols []string
	want     string
}{
	{
		name:     "guarantee created",
		sql:      `INSERT INTO guarantee (id, committee_id, user_id, elector_name, status, created_at, updated_at) VALUES (7, 3, 12, 'Zed', 'medium', now(), now())`,
		timeCols: []string{"created_at", "updated_at"},
		want:     `{"action":"created","data":{"committee_id":3,"created_at":"T","elector_id":null,"elector_name":"Zed","id":7,"notes":"","status":"medium","updated_at":"T","user_id":12},"id":"ID","key":"[7]","table":"public.guarantee","timestamp":"TS","type":"guarantee_update","version":"LSN"}`,
	},
	{
		name:     "guarantee updated",
		sql:      `UPDATE guarantee SET status = 'strong' WHERE id = 7`,
		timeCols: []string{"created_at", "updated_at"},
		want:     `{"action":"updated","data":{"committee_id":3,"created_at":"T","elector_id":null,"elector_name":"Zed","id":7,"notes":"","status":"strong","updated_at":"T","user_id":12},"id":"ID","key":"[7]","old":{"status":"medium"},"table":"public.guarantee","timestamp":"TS","type":"guarantee_update","version":"LSN"}`,
	},
	{
		name:     "guarantee deleted",
		sql:      `DELETE FROM guarantee WHERE id = 7`,
		timeCols: []string{"created_at", "updated_at"},
		want:     `{"action":"deleted","data":{"committee_id":3,"created_at":"T","elector_id":null,"elector_name":"Zed","id":7,"notes":"","status":"strong","updated_at":"T","user_id":12},"id":"ID","key":"[7]","table":"public.guarantee","timestamp":"TS","type":"guarantee_update","version":"LSN"}`,
	},
	{
		name:     "attendance created",
		sql:      `INSERT INTO attendance (id, committee_id, elector_id, user_id, attended) VALUES (5, 2, 900, 12, true)`,
		timeCols: []string{"marked_at"},
		want:     `{"action":"created","data":{"attended":true,"committee_id":2,"elector_id":900,"id":5,"marked_at":"T","user_id":12},"id":"ID","key":"[5]","table":"public.attendance","timestamp":"TS","type":"attendance_update","version":"LSN"}`,
	},
	{
		name:     "attendance updated",
		sql:      `UPDATE attendance SET attended = false WHERE id = 5`,
		timeCols: []string{"marked_at"},
		want:     `{"action":"updated","data":{"attended":false,"committee_id":2,"elector_id":900,"id":5,"marked_at":"T","user_id":12},"id":"ID","key":"[5]","old":{"attended":true},"table":"public.attendance","timestamp":"TS","type":"attendance_update","version":"LSN"}`,
	},
	{
		name:     "attendance deleted",
		sql:      `DELETE FROM attendance WHERE id = 5`,
		timeCols: []string{"marked_at"},
		want:     `{"action":"deleted","data":{"attended":false,"committee_id":2,"elector_id":900,"id":5,"marked_at":"T","user_id":12},"id":"ID","key":"[5]","table":"public.attendance","timestamp":"TS","type":"attendance_update","version":"LSN"}`,
	},
	{
		name:     "vote_count created",
		sql:      `INSERT INTO vote_count (id, committee_id, candidate_id, votes) VALUES (9, 1, 2, 40)`,
		timeCols: []string{"updated_at"},
		want:     `{"action":"created","data":{"committee_id":1,"vote_count":{"candidate_id":2,"committee_id":1,"id":9,"updated_at":"T","votes":40}},"id":"ID","key":"[9]","table":"public.vote_count","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "vote_count updated",
		sql:      `UPDATE vote_count SET votes = 41 WHERE id = 9`,
		timeCols: []string{"updated_at"},
		want:     `{"action":"updated","data":{"committee_id":1,"vote_count":{"candidate_id":2,"committee_id":1,"id":9,"updated_at":"T","votes":41}},"id":"ID","key":"[9]","old":{"votes":40},"table":"public.vote_count","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "vote_count deleted",
		sql:      `DELETE FROM vote_count WHERE id = 9`,
		timeCols: []string{"updated_at"},
		want:     `{"action":"deleted","data":{"committee_id":1,"vote_count":{"candidate_id":2,"committee_id":1,"id":9,"updated_at":"T","votes":41}},"id":"ID","key":"[9]","table":"public.vote_count","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "election_results generated",
		sql:      `INSERT INTO election_results (id, committee_id, candidate_id, total_votes, percentage, rank, details) VALUES (4, 1, 1, 60, 60.00, 1, '{"turnout": 0.6}')`,
		timeCols: []string{"generated_at"},
		want:     `{"action":"created","data":{"action_type":"results_generated","committee_id":1,"election_results":{"candidate_id":1,"committee_id":1,"details":{"turnout":0.6},"generated_at":"T","id":4,"percentage":"60.00","rank":1,"total_votes":60}},"id":"ID","key":"[4]","table":"public.election_results","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "election_results updated",
		sql:      `UPDATE election_results SET total_votes = 61, percentage = 61.00 WHERE id = 4`,
		timeCols: []string{"generated_at"},
		want:     `{"action":"updated","data":{"action_type":"results_updated","committee_id":1,"election_results":{"candidate_id":1,"committee_id":1,"details":{"turnout":0.6},"generated_at":"T","id":4,"percentage":"61.00","rank":1,"total_votes":61}},"id":"ID","key":"[4]","old":{"percentage":"60.00","total_votes":60},"table":"public.election_results","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "election-wide result",
		sql:      `INSERT INTO election_results (id, committee_id, candidate_id, total_votes) VALUES (5, NULL, 2, 500)`,
		timeCols: []string{"generated_at"},
		want:     `{"action":"created","data":{"action_type":"results_generated","committee_id":null,"election_results":{"candidate_id":2,"committee_id":null,"details":{},"generated_at":"T","id":5,"percentage":"0.00","rank":null,"total_votes":500}},"id":"ID","key":"[5]","table":"public.election_results","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
	{
		name:     "election_results deleted",
		sql:      `DELETE FROM election_results WHERE id = 5`,
		timeCols: []string{"generated_at"},
		want:     `{"action":"deleted","data":{"action_type":"results_updated","committee_id":null,"election_results":{"candidate_id":2,"committee_id":null,"details":{},"generated_at":"T","id":5,"percentage":"0.00","rank":null,"total_votes":500}},"id":"ID","key":"[5]","table":"public.election_results","timestamp":"TS","type":"voting_update","version":"LSN"}`,
	},
}

func TestTrackedTablesBecomeTypedMessages(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	for _, s := range typedMessageSteps {
		pg.Exec(t, s.sql)
		got := normalize(t, c.change(t), s.timeCols...)
		if got != s.want {
			t.Errorf("%s:\n got %s\nwant %s", s.name, got, s.want)
		}
	}
}

func TestOnlyCommittedChangesOfTrackedTablesAreSent(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE audit_log (id serial PRIMARY KEY, note text)`)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `BEGIN;
		INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'rolled back');
		UPDATE vote_count SET votes = votes + 1;
		ROLLBACK;`)
	pg.Exec(t, `INSERT INTO audit_log (note) VALUES ('untracked')`)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'marker')`)

	m := c.change(t)
	data, _ := m["data"].(map[string]any)
	if data["elector_name"] != "marker" {
		t.Fatalf("first message after a rollback and an untracked insert is %v, want the marker", m)
	}
	c.quiet(t, 300*time.Millisecond)
}

func TestOneStatementUpdatingTenThousandRowsSendsTenThousandMessages(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name)
		SELECT 1 + g % 3, g % 50, 'elector ' || g FROM generate_series(1, 10000) g`)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `UPDATE guarantee SET status = 'strong'`)
	seen := map[string]bool{}
	var last [2]uint64
	for i := 0; i < 10000; i++ {
		m := c.change(t)
		id := m["id"].(string)
		if seen[id] {
			t.Fatalf("id %s delivered twice", id)
		}
		seen[id] = true
		var lsn, seq uint64
		fmt.Sscanf(id, "%d-%d", &lsn, &seq)
		if lsn < last[0] || (lsn == last[0] && seq <= last[1]) && i > 0 {
			t.Fatalf("message %d id %s not after %d-%d", i, id, last[0], last[1])
		}
		last = [2]uint64{lsn, seq}
		if m["action"] != "updated" {
			t.Fatalf("message %d: action %v", i, m["action"])
		}
	}
	c.quiet(t, 300*time.Millisecond)
}

// A busy database whose tracked tables are idle must not make the slot pin
// WAL forever: with nothing in flight, walcast confirms the server's WAL
// end from its keepalives.
func TestIdleTrackedTablesDoNotPinWAL(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE busy (id serial PRIMARY KEY, payload text)`)
	cfg := testConfig(t, pg.URL())
	log := discardLogger()
	app := NewApp(cmdRun, cfg, log)
	app.statusInterval = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !app.Status().Streaming {
		time.Sleep(10 * time.Millisecond)
	}
	retained := func() int64 {
		var n int64
		conn, err := pgx.Connect(context.Background(), pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		err = conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'walcast'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// About 32 MB of WAL that no tracked table is part of.
	for i := 0; i < 8; i++ {
		pg.Exec(t, `INSERT INTO busy (payload) SELECT repeat('x', 1000) FROM generate_series(1, 4000)`)
	}
	before := retained()
	deadline := time.Now().Add(20 * time.Second)
	for retained() > 1<<20 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	after := retained()
	t.Logf("WAL behind the slot's confirmed position: %d kB after the writes, %d kB once idle", before/1024, after/1024)
	if after > 1<<20 {
		t.Errorf("slot still %d kB behind after 20 s: idle tracked tables pin WAL", after/1024)
	}
}

// /metrics moves as changes flow.
func TestMetricsMoveWithChanges(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	if w := c.next(t, 5*time.Second); w["type"] != "welcome" { // registered by now
		t.Fatalf("first frame %v", w)
	}
	scrape := func() string {
		code, body := httpGet(t, "http://"+app.addr+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		return body
	}
	value := func(body, series string) string {
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, series+" ") {
				return strings.TrimPrefix(line, series+" ")
			}
		}
		return "absent"
	}
	before := scrape()
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id) VALUES (1, 1), (2, 2)`)
	c.change(t)
	c.change(t)
	// Delivery can overtake the capture's bookkeeping by a moment.
	after := scrape()
	for deadline := time.Now().Add(5 * time.Second); (value(after, "walcast_bus_append_seconds_count") == "0" || value(after, `walcast_changes_total{action="created",table="public.guarantee"}`) != "2") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		after = scrape()
	}
	for _, s := range []struct{ series, before, after string }{
		{`walcast_changes_total{action="created",table="public.guarantee"}`, "absent", "2"},
		{`walcast_deliveries_total`, "0", "2"},
		{`walcast_clients`, "1", "1"},
		{`walcast_replication_streaming`, "1", "1"},
	} {
		if b, a := value(before, s.series), value(after, s.series); b != s.before || a != s.after {
			t.Errorf("%s: %s -> %s, want %s -> %s", s.series, b, a, s.before, s.after)
		}
	}
	if v := value(after, "walcast_bus_append_seconds_count"); v != "1" {
		t.Errorf("walcast_bus_append_seconds_count = %s, want 1", v)
	}
}

// Under a key-only replica identity a deleted row arrives without its
// committee_id; walcast cannot scope it, so only admins receive it.
func TestUnscopedDeletesReachAdminsOnly(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE keyed (id int PRIMARY KEY, committee_id int, user_id int, status text)`)
	app := startApp(t, testConfig(t, pg.URL(), "--tables", "keyed=guarantee"))
	app.waitStreaming(t)
	admin := dial(t, app.addr, token(t, 1, "admin"), "")
	member := dial(t, app.addr, token(t, 2, "supervisor", 9), "")
	pg.Exec(t, `INSERT INTO keyed VALUES (1, 9, 2, 'weak')`)
	admin.change(t)
	member.change(t)
	pg.Exec(t, `DELETE FROM keyed WHERE id = 1`)
	pg.Exec(t, `INSERT INTO keyed VALUES (2, 9, 2, 'weak')`)
	if m := admin.change(t); m["action"] != "deleted" {
		t.Errorf("admin got %v, want the delete", m)
	}
	if m := member.change(t); m["action"] != "created" {
		t.Errorf("committee member got %v, want the next insert (the unscoped delete withheld)", m)
	}
}
