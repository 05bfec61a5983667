package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// writeConfig writes a config file into the test's directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "walcast.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The file sets what the flags set; the environment overrides the file
// and a flag overrides both. WALCAST_CONFIG names the file like --config.
func TestConfigFilePrecedence(t *testing.T) {
	path := writeConfig(t, `
database-url: postgres://walcast@db.example/app
history: 500
client-window: 300
max-connections: 7
allowed-origins: [https://a.example, https://b.example]
tables: election_guarantee=guarantee,attendance
`)
	env := map[string]string{"WALCAST_CONFIG": path, "WALCAST_CLIENT_WINDOW": "400", "WALCAST_MAX_CONNECTIONS": "8"}
	cfg, _, err := parseConfig(cmdRun, []string{"--max-connections", "9"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.History != 500 || cfg.ClientWindow != 400 || cfg.MaxConns != 9 {
		t.Errorf("history %d (want 500 from the file), client-window %d (want 400 from the environment), max-connections %d (want 9 from the flag)",
			cfg.History, cfg.ClientWindow, cfg.MaxConns)
	}
	if cfg.DatabaseURL != "postgres://walcast@db.example/app" || strings.Join(cfg.AllowedOrigins, " ") != "https://a.example https://b.example" {
		t.Errorf("database-url %q, allowed-origins %v", cfg.DatabaseURL, cfg.AllowedOrigins)
	}
	if len(cfg.Tables) != 2 || cfg.Tables[0].Name != "election_guarantee" || cfg.Tables[1].Kind != schema.KindAttendance {
		t.Errorf("tables %+v", cfg.Tables)
	}
	// --tables overrides the file's list, long form included.
	long := writeConfig(t, "tables:\n  - table: app.announcements\n    type: announcement_update\n    owner: none\n    exclude: [phone]\n")
	cfg, _, err = parseConfig(cmdRun, []string{"--config", long}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	tb := cfg.Tables[0]
	if tb.Qualified() != "app.announcements" || tb.Kind != "" || tb.MessageType() != "announcement_update" || tb.OwnerCol() != "" ||
		tb.CommitteeCol() != "committee_id" || tb.Leaves("phone") || !tb.Leaves("body") {
		t.Errorf("long form parsed as %+v", tb)
	}
	cfg, _, err = parseConfig(cmdRun, []string{"--config=" + long, "--tables", "guarantee"}, func(string) string { return "" })
	if err != nil || len(cfg.Tables) != 1 || cfg.Tables[0].Name != "guarantee" {
		t.Errorf("--tables did not override the file: %+v %v", cfg.Tables, err)
	}
	// A key of an option another command uses is fine: one file serves all.
	if _, _, err := parseConfig(cmdCheck, []string{"--config", path}, func(string) string { return "" }); err != nil {
		t.Errorf("check with run's settings in the file: %v", err)
	}
}

// A mistake in the file stops walcast with exit status 2, the file's line
// and the fix; a typo is never ignored; a secret is never printed.
func TestConfigFileErrors(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"unknown key", "listen: :8080\nhistroy: 5\n", []string{"walcast.yaml:2:", `unknown key "histroy"`, `did you mean "history"`}},
		{"unknown table key", "tables:\n  - table: guarantee\n    exlude: [notes]\n", []string{":3:", `unknown key "exlude"`, `did you mean "exclude"`}},
		{"unknown dashboard key", "tables:\n  - table: guarantee\n    dashboard: {statuss: s}\n", []string{":3:", `"statuss"`}},
		{"syntax", "listen: :8080\n  history: [5\n", []string{"walcast.yaml", "line 2", "fix: correct the YAML syntax"}},
		{"bad value", "history: -1\n", []string{":1:", "history", "want a positive integer"}},
		{"no type", "tables:\n  - table: election_notes\n", []string{":2:", "has no type", "fix: add type:"}},
		{"built-in type", "tables:\n  - table: notes\n    type: guarantee_update\n", []string{":3:", "walcast's own message type"}},
		{"exclude routing", "tables:\n  - table: notes\n    type: note_update\n    exclude: [committee_id]\n", []string{":2:", "routing column"}},
		{"exclude and include", "tables:\n  - table: guarantee\n    exclude: [a]\n    include: [b]\n", []string{"both exclude and include"}},
		{"twice", "tables:\n  - table: guarantee\n  - table: public.guarantee\n", []string{":3:", "listed twice"}},
		{"secret", "redis-url: http://walcast:s3cretpass@redis:6379\n", []string{":1:", "redis-url"}},
		{"type syntax", "tables:\n  - table: notes\n    type: Note Update\n", []string{":3:", "lower-case letters"}},
		{"status values", "tables:\n  - table: guarantee\n    dashboard: {status_values: {strong: A, weak: A}}\n", []string{":3:", `"A" means both strong and weak`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeConfig(t, c.text)
			var out, errOut bytes.Buffer
			code := realMain([]string{cmdRun, "--config", path}, &out, &errOut, func(string) string { return "" })
			msg := errOut.String()
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", code, msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "s3cretpass") {
				t.Errorf("the password was printed: %s", msg)
			}
		})
	}
	// A password given in the file is masked in everything walcast
	// prints, like one given by flag.
	path := writeConfig(t, "database-url: postgres://walcast:filepassw0rd@127.0.0.1:1/app?connect_timeout=2\n")
	var report, errs bytes.Buffer
	realMain([]string{cmdCheck, "--config", path}, &report, &errs, func(string) string { return "" })
	if strings.Contains(report.String()+errs.String(), "filepassw0rd") || !strings.Contains(report.String(), "127.0.0.1") {
		t.Errorf("check with the file's database-url printed:\n%s%s", report.String(), errs.String())
	}
	var out, errOut bytes.Buffer
	if code := realMain([]string{cmdRun, "--config", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &errOut, func(string) string { return "" }); code != 2 ||
		!strings.Contains(errOut.String(), "no such file") {
		t.Errorf("missing file: exit %d, %s", code, errOut.String())
	}
}

// hasAny returns the first of words found in b, "" when none is.
func hasAny(b []byte, words ...string) string {
	for _, w := range words {
		if bytes.Contains(b, []byte(w)) {
			return w
		}
	}
	return ""
}

// (b) A custom table with its own message type streams and is scoped by
// committee like the election tables; subscriptions accept its type.
// (c) An excluded column never leaves walcast: not in data, not in old
// (REPLICA IDENTITY FULL updates and deletes), not in unchanged.
func TestConfigFileCustomTableAndExclude(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE app_announcement (id serial PRIMARY KEY, committee_id bigint, title text, private_blob text);
		ALTER TABLE guarantee ADD COLUMN phone text;
		ALTER TABLE guarantee REPLICA IDENTITY FULL`)
	path := writeConfig(t, `
tables:
  - table: public.guarantee
    type: guarantee
    exclude: [phone]
  - table: app_announcement
    type: announcement_update
    owner: none
    exclude: [private_blob]
dashboard-interval: 0s
`)
	cfg := testConfig(t, pg.URL(), "--config", path)
	app := startApp(t, cfg)
	app.waitStreaming(t)
	admin := dial(t, app.addr, token(t, 1, "admin"), "")
	member3 := dial(t, app.addr, token(t, 20, "supervisor", 3), "types=announcement_update")
	member2 := dial(t, app.addr, token(t, 21, "supervisor", 2), "types=announcement_update")

	// A large, incompressible private_blob is stored out of line (TOAST):
	// an update that leaves it alone sends it as unchanged.
	pg.Exec(t, `INSERT INTO app_announcement (committee_id, title, private_blob)
		VALUES (3, 'polls open', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i) || 'BLOBSECRET')`)
	pg.Exec(t, `UPDATE app_announcement SET title = 'polls open at 8' WHERE committee_id = 3`)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name, phone) VALUES (3, 20, 'Dana', '+965PHONESECRET')`)
	pg.Exec(t, `UPDATE guarantee SET phone = '+965PHONESECRET2', notes = 'n' WHERE elector_name = 'Dana'`)
	pg.Exec(t, `DELETE FROM guarantee WHERE elector_name = 'Dana'`)
	pg.Exec(t, `DELETE FROM app_announcement`)
	// Too large to send whole: the excluded column is not named in omitted.
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, phone, notes) VALUES (3, 20, '+965PHONESECRET3', repeat('x', 2*1024*1024))`)
	// Last, for committee 2: member2's first change must be this one.
	pg.Exec(t, `INSERT INTO app_announcement (committee_id, title) VALUES (2, 'south')`)

	leaks := []string{"phone", "PHONESECRET", "private_blob", "BLOBSECRET"}
	checkAdminSeesNoExcluded(t, admin, leaks)
	// The delete (key-only identity) carries no committee_id: admins only.
	for i, action := range []string{"created", "updated"} {
		raw := member3.changeRaw(t)
		var m map[string]any
		json.Unmarshal(raw, &m)
		if m["type"] != "announcement_update" || m["action"] != action {
			t.Fatalf("committee 3 member's change %d: %s", i, raw)
		}
		if leak := hasAny(raw, leaks...); leak != "" {
			t.Errorf("committee 3 member's change %d carries %q: %s", i, leak, raw)
		}
	}
	if m := member2.change(t); m["data"].(map[string]any)["title"] != "south" {
		t.Errorf("committee 2 member received another committee's announcement: %v", m)
	}
}

// checkAdminSeesNoExcluded reads the admin's changes of
// TestConfigFileCustomTableAndExclude in order: each of the expected type
// and action, none carrying an excluded column or its value.
func checkAdminSeesNoExcluded(t *testing.T, admin *wsClient, leaks []string) {
	t.Helper()
	wantAdmin := []struct{ typ, action string }{
		{"announcement_update", "created"}, {"announcement_update", "updated"},
		{"guarantee_update", "created"}, {"guarantee_update", "updated"}, {"guarantee_update", "deleted"},
		{"announcement_update", "deleted"}, {"guarantee_update", "created"}, {"announcement_update", "created"},
	}
	for i, w := range wantAdmin {
		raw := admin.changeRaw(t)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m["type"] != w.typ || m["action"] != w.action {
			t.Fatalf("admin change %d: %s %s, want %s %s: %s", i, m["type"], m["action"], w.typ, w.action, raw)
		}
		if leak := hasAny(raw, leaks...); leak != "" {
			t.Errorf("admin change %d carries %q: %s", i, leak, raw)
		}
		if i == 6 && (m["oversized"] != true || !strings.Contains(string(mustJSON(t, m["omitted"])), "notes")) {
			t.Errorf("the large row is not sent as its key: %.300s", raw)
		}
		if i == 3 { // the update changed phone and notes: old has notes only
			old, _ := m["old"].(map[string]any)
			if _, ok := old["notes"]; !ok {
				t.Errorf("update's old lacks notes: %s", raw)
			}
		}
	}
}

// (d) A config file naming a column the table does not have is refused
// at start with exit status 2 and the fix; walcast check lists it, with a
// dashboard field whose default column is missing as a warning.
func TestConfigFileMissingColumnRefused(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `ALTER TABLE vote_count RENAME COLUMN votes TO vote_total`)
	path := writeConfig(t, `
tables:
  - table: guarantee
    exclude: [phone_number]
  - table: attendance
    owner: marked_by_id
  - table: vote_count
`)
	var out, errOut strings.Builder
	code := realMain([]string{cmdRun, "--config", path, "--database-url", pg.URL(), "--listen", "127.0.0.1:0", "--jwt-secret", testSecret},
		&out, &errOut, func(string) string { return "" })
	if code != 2 {
		t.Fatalf("run: exit %d, want 2; stderr: %s", code, errOut.String())
	}
	for _, w := range []string{"config: public.guarantee has no column phone_number (named as exclude in the config file)", "fix: correct exclude of table public.guarantee", "its columns: id, committee_id"} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("run's stderr lacks %q: %s", w, errOut.String())
		}
	}
	out.Reset()
	errOut.Reset()
	code = realMain([]string{cmdCheck, "--config", path, "--database-url", pg.URL()}, &out, &errOut, func(string) string { return "" })
	t.Logf("check:\n%s", out.String())
	if code != 1 {
		t.Fatalf("check: exit %d, want 1; stderr: %s", code, errOut.String())
	}
	for _, w := range []string{
		"problem  columns", "public.guarantee has no column phone_number",
		"public.attendance has no column marked_by_id (named as owner in the config file)",
		"warning  dashboard", "public.vote_count has no column votes: dashboards leave out the votes",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("check's report lacks %q", w)
		}
	}
}

// (a) A Django app's schema: app-prefixed tables, a nullable marked_by_id
// owner on attendance, guarantee_status as the status column, vote_count
// as the votes column, a committee table without electors. With a config
// file, changes stream, attendance is routed to the user who marked it,
// and supervisor and personal dashboards arrive with the fields the
// schema supports (electors null).
func TestConfigFileDjangoSchema(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Exec(t, `CREATE TABLE election_committee (id bigserial PRIMARY KEY, name varchar(100) NOT NULL);
		CREATE TABLE election_guarantee (id bigserial PRIMARY KEY, committee_id bigint NOT NULL REFERENCES election_committee (id),
			user_id integer NOT NULL, elector_name varchar(200) NOT NULL, guarantee_status varchar(10) NOT NULL, phone varchar(20));
		CREATE TABLE election_attendance (id bigserial PRIMARY KEY, committee_id bigint NOT NULL REFERENCES election_committee (id),
			elector_id bigint NOT NULL, marked_by_id integer NULL, attended boolean NOT NULL);
		CREATE TABLE election_votecount (id bigserial PRIMARY KEY, committee_id bigint NOT NULL REFERENCES election_committee (id),
			candidate_id bigint NOT NULL, vote_count integer NOT NULL);
		ALTER TABLE election_guarantee REPLICA IDENTITY FULL; ALTER TABLE election_attendance REPLICA IDENTITY FULL;
		ALTER TABLE election_votecount REPLICA IDENTITY FULL;
		INSERT INTO election_committee (id, name) VALUES (1, 'North'), (3, 'East')`)
	path := writeConfig(t, `
dashboard-interval: 50ms
tables:
  - table: election_guarantee
    type: guarantee
    exclude: [phone]
    dashboard:
      status: guarantee_status
      status_values: {strong: HIGH, medium: MID, weak: [LOW, very low]}
      electors: none
  - table: election_attendance
    type: attendance
    owner: marked_by_id
  - table: election_votecount
    type: vote_count
    owner: none
    dashboard: {votes: vote_count}
`)
	app, logs := startLogged(t, cmdRun, testConfig(t, pg.URL(), "--config", path))
	app.waitStreaming(t)
	supervisor := dial(t, app.addr, token(t, 30, "supervisor", 3), "")
	marker := dial(t, app.addr, token(t, 21, "user"), "")

	pg.Exec(t, `INSERT INTO election_guarantee (committee_id, user_id, elector_name, guarantee_status, phone) VALUES
		(3, 21, 'a', 'HIGH', '+1'), (3, 21, 'b', 'very low', '+2'), (1, 22, 'c', 'HIGH', '+3')`)
	pg.Exec(t, `INSERT INTO election_attendance (committee_id, elector_id, marked_by_id, attended) VALUES (3, 1, NULL, true)`)
	pg.Exec(t, `INSERT INTO election_attendance (committee_id, elector_id, marked_by_id, attended) VALUES (3, 2, 21, true), (3, 3, 21, false)`)
	pg.Exec(t, `INSERT INTO election_votecount (committee_id, candidate_id, vote_count) VALUES (3, 1, 7), (3, 2, 5)`)

	// The user who marked the attendance gets it, by marked_by_id; the
	// row nobody marked is not theirs.
	var marked []map[string]any
	for len(marked) < 2 {
		m := marker.change(t)
		if m["type"] == "attendance_update" {
			marked = append(marked, m)
		}
	}
	for _, m := range marked {
		if id := m["data"].(map[string]any)["marked_by_id"]; id != float64(21) {
			t.Errorf("user 21 got attendance marked by %v: %v", id, m)
		}
	}
	if m := supervisor.change(t); m["type"] != "guarantee_update" || hasAny(mustJSON(t, m), "phone", "+1") != "" {
		t.Errorf("supervisor's first change: %v", m)
	}

	wantSup := func(d map[string]any) bool {
		g, _ := d["guarantees"].(map[string]any)
		a, _ := d["attendance"].(map[string]any)
		return g != nil && g["strong"] == float64(1) && g["weak"] == float64(1) && a != nil && a["attended"] == float64(2) &&
			d["total_votes"] == float64(12)
	}
	sup := awaitDashboard(t, supervisor, "supervisor", wantSup)
	if a := sup["attendance"].(map[string]any); a["electors"] != nil {
		t.Errorf("electors %v, want null (electors: none)", a["electors"])
	}
	personal := awaitDashboard(t, marker, "personal", func(d map[string]any) bool {
		g, _ := d["guarantees"].(map[string]any)
		return g != nil && g["total"] == float64(2) && d["attendance_marked"] == float64(1)
	})
	t.Logf("supervisor: %v\npersonal: %v", sup, personal)
	if n := logCount(logs, "dashboards cannot be computed"); n != 0 {
		t.Errorf("%d dashboard failures logged:\n%s", n, logs.String())
	}
}

// awaitDashboard waits for a dashboard_update of typ whose data ok
// accepts, and returns its data.
func awaitDashboard(t *testing.T, c *wsClient, typ string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var data map[string]any
	deadline := time.After(10 * time.Second)
	c.await(t, func() <-chan time.Time { return deadline }, typ+" dashboard", func(b []byte) bool {
		var f map[string]any
		if json.Unmarshal(b, &f) != nil || f["type"] != "dashboard_update" || f["dashboard_type"] != typ {
			return false
		}
		data, _ = f["data"].(map[string]any)
		return data != nil && ok(data)
	})
	return data
}

// Dashboards degrade: without a config file, a tracked table lacking a
// column the dashboards read (guarantee.status renamed) leaves that field
// null with one warning; the other fields and dashboards keep arriving.
func TestDashboardFieldDegrades(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `ALTER TABLE guarantee RENAME COLUMN status TO guarantee_status`)
	cfg := testConfig(t, pg.URL(), "--dashboard-interval", "50ms")
	app, logs := startLogged(t, cmdRun, cfg)
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 30, "supervisor", 3), "")
	for i := range 3 {
		pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (3, 30, 'x')`)
		pg.Exec(t, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (3, $1, 30)`, i+1)
		want := float64(i + 1)
		d := awaitDashboard(t, c, "supervisor", func(d map[string]any) bool {
			a, _ := d["attendance"].(map[string]any)
			return a != nil && a["attended"] == want
		})
		if d["guarantees"] != nil || d["attendance"].(map[string]any)["electors"] != float64(300) {
			t.Fatalf("supervisor dashboard %v: want guarantees null, electors 300", d)
		}
	}
	if n := logCount(logs, "dashboards send guarantee counts by status as null"); n != 1 {
		t.Errorf("%d warnings about the missing status column, want 1:\n%s", n, logs.String())
	}
	if n := logCount(logs, "dashboards cannot be computed"); n != 0 {
		t.Errorf("%d dashboard failures logged", n)
	}
}
