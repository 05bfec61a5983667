package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/cdc"
)

func logCount(logs *syncBuffer, s string) int { return strings.Count(logs.String(), s) }

// An operator maps a table whose committee_id is not an integer (a text
// code, a uuid, numeric with a fraction) as guarantee. walcast cannot tell
// which committee a row belongs to, so it must not send it to everyone:
// admins get it, a committee member and a regular user get nothing, and
// the metric and the log say what to fix.
func TestUnreadableRoutingValuesReachAdminsOnly(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE app_text (id serial PRIMARY KEY, committee_id text, user_id bigint, note text);
		CREATE TABLE app_uuid (id serial PRIMARY KEY, committee_id uuid, user_id bigint, note text);
		CREATE TABLE app_num (id serial PRIMARY KEY, committee_id numeric(10,2), user_id text, note text);
		ALTER TABLE app_text REPLICA IDENTITY FULL; ALTER TABLE app_uuid REPLICA IDENTITY FULL; ALTER TABLE app_num REPLICA IDENTITY FULL`)
	cfg := testConfig(t, pg.URL(), "--tables", "guarantee,app_text=guarantee,app_uuid=guarantee,app_num=guarantee")
	cfg.Live.DashboardInterval = 0
	app, logs := startLogged(t, cmdRun, cfg)
	app.waitStreaming(t)
	admin := dial(t, app.addr, token(t, 1, "admin"), "")
	member := dial(t, app.addr, token(t, 12, "supervisor", 3), "")
	user := dial(t, app.addr, token(t, 12, "user"), "")

	bad := []struct{ table, sql string }{
		{"public.app_text", `INSERT INTO app_text (committee_id, user_id, note) VALUES ('abc', 12, 'text code')`},
		{"public.app_text", `INSERT INTO app_text (committee_id, user_id, note) VALUES ('03', 12, 'leading zero')`},
		{"public.app_uuid", `INSERT INTO app_uuid (committee_id, user_id, note) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12, 'uuid')`},
		{"public.app_num", `INSERT INTO app_num (committee_id, user_id, note) VALUES (3.00, '12', 'numeric 3.00')`},
		{"public.app_num", `INSERT INTO app_num (committee_id, user_id, note) VALUES (NULL, 'u12', 'text owner')`},
		{"public.app_text", `UPDATE app_text SET note = 'updated' WHERE committee_id = 'abc'`},
		{"public.app_text", `DELETE FROM app_text WHERE committee_id = 'abc'`},
	}
	for _, b := range bad {
		pg.Exec(t, b.sql)
	}
	// A readable row last: both scoped clients must see it as their
	// first change, which proves nothing before it reached them.
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (3, 12, 'readable')`)

	for i, b := range bad {
		m := admin.change(t)
		if m["table"] != b.table {
			t.Fatalf("admin change %d: table %v, want %s (%v)", i, m["table"], b.table, m)
		}
	}
	if m := admin.change(t); m["data"].(map[string]any)["elector_name"] != "readable" {
		t.Fatalf("admin: got %v, want the readable row", m)
	}
	for name, c := range map[string]*wsClient{"committee member": member, "owner": user} {
		if m := c.change(t); m["table"] != "public.guarantee" || m["data"].(map[string]any)["elector_name"] != "readable" {
			t.Errorf("%s received a row walcast could not place: %v", name, m)
		}
	}

	for sample, want := range map[string]float64{
		`walcast_unroutable_changes_total{reason="unreadable_committee_id",table="public.app_text"}`: 4,
		`walcast_unroutable_changes_total{reason="unreadable_committee_id",table="public.app_uuid"}`: 1,
		`walcast_unroutable_changes_total{reason="unreadable_committee_id",table="public.app_num"}`:  1,
		`walcast_unroutable_changes_total{reason="unreadable_user_id",table="public.app_num"}`:       1,
	} {
		if got, ok := metric(t, app.addr, sample); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", sample, got, ok, want)
		}
	}
	// Rate-limited: one line per table and reason, not one per row.
	if n := logCount(logs, `reason=unreadable_committee_id`); n != 3 {
		t.Errorf("%d log lines for unreadable committee ids, want one per table (3)", n)
	}
	if logCount(logs, "store the id as an exact integer") == 0 {
		t.Error("the log does not say what to fix")
	}
}

// A publication whose column list leaves out committee_id would make every
// row look election-wide: walcast refuses it at start with the fix, and so
// it refuses a row filter. A column list added while walcast runs sends the
// table's changes to admins only.
func TestPublicationWithoutRoutingColumns(t *testing.T) {
	pg := electionDB(t)
	t.Run("column list refused at start", func(t *testing.T) {
		pg.Exec(t, `CREATE PUBLICATION cols FOR TABLE guarantee (id, notes), attendance, vote_count, election_results`)
		se := runUntilSetupError(t, pg.URL(), "--publication", "cols", "--slot", "cols")
		if !strings.Contains(se.Problem, "public.guarantee without committee_id, user_id") {
			t.Errorf("problem %q does not name the missing columns", se.Problem)
		}
		if !strings.Contains(se.Fix, "ALTER PUBLICATION cols DROP TABLE public.guarantee; ALTER PUBLICATION cols ADD TABLE public.guarantee;") {
			t.Errorf("fix %q does not publish the whole table", se.Fix)
		}
	})
	t.Run("row filter refused at start", func(t *testing.T) {
		pg.Exec(t, `CREATE PUBLICATION filtered FOR TABLE guarantee WHERE (committee_id = 3), attendance, vote_count, election_results`)
		se := runUntilSetupError(t, pg.URL(), "--publication", "filtered", "--slot", "filtered")
		if !strings.Contains(se.Problem, "public.guarantee with a row filter") || !strings.Contains(se.Fix, "ALTER PUBLICATION filtered DROP TABLE public.guarantee") {
			t.Errorf("setup error %v does not refuse the row filter with the fix", se)
		}
	})
	t.Run("column list added while running", func(t *testing.T) {
		cfg := testConfig(t, pg.URL(), "--publication", "live_cols", "--slot", "live_cols")
		cfg.Live.DashboardInterval = 0
		app := startApp(t, cfg)
		app.waitStreaming(t)
		admin := dial(t, app.addr, token(t, 1, "admin"), "")
		member := dial(t, app.addr, token(t, 12, "supervisor", 3), "")
		pg.Exec(t, `ALTER PUBLICATION live_cols SET TABLE guarantee (id, status), attendance, vote_count, election_results`)
		pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (3, 12, 'columns left out')`)
		pg.Exec(t, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (3, 77, 12)`)
		if m := admin.change(t); m["table"] != "public.guarantee" {
			t.Fatalf("admin: got %v, want the guarantee row", m)
		}
		if m := member.change(t); m["table"] != "public.attendance" {
			t.Fatalf("committee member received a row without its committee: %v", m)
		}
		sample := `walcast_unroutable_changes_total{reason="routing_columns_not_published",table="public.guarantee"}`
		if got, ok := metric(t, app.addr, sample); !ok || got != 1 {
			t.Errorf("%s = %v, want 1", sample, got)
		}
	})
}

// A Django RenameModel renames a tracked table while walcast runs. The
// publication follows the table, and so does walcast (by relation id):
// changes keep arriving under the configured name, with one warning that
// says to update --tables. A move to another schema is followed the same
// way. The next start, with the old name, is refused with the fix.
func TestRenamedTrackedTableKeepsStreaming(t *testing.T) {
	pg := electionDB(t)
	cfg := testConfig(t, pg.URL())
	cfg.Live.DashboardInterval = 0
	app, logs := startLogged(t, cmdRun, cfg)
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 12, "supervisor", 3), "")

	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (3, 12, 'before')`)
	if m := c.change(t); m["data"].(map[string]any)["elector_name"] != "before" {
		t.Fatalf("got %v", m)
	}
	pg.Exec(t, `ALTER TABLE guarantee RENAME TO guarantees_guarantee`)
	for _, name := range []string{"after rename 1", "after rename 2"} {
		pg.Exec(t, `INSERT INTO guarantees_guarantee (committee_id, user_id, elector_name) VALUES (3, 12, $1)`, name)
		m := c.change(t)
		if m["data"].(map[string]any)["elector_name"] != name || m["table"] != "public.guarantee" {
			t.Fatalf("after the rename: got %v, want %q as public.guarantee", m, name)
		}
	}
	// A reconnection (here: the walsender is terminated) keeps following
	// the table by its id, although its configured name is gone.
	pg.Exec(t, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'walcast'`)
	eventually(t, 30*time.Second, "walcast streams again", func() bool {
		st := app.app.Status()
		return st.Sessions >= 2 && st.Streaming
	})
	pg.Exec(t, `INSERT INTO guarantees_guarantee (committee_id, user_id, elector_name) VALUES (3, 12, 'after reconnect')`)
	if m := c.change(t); m["data"].(map[string]any)["elector_name"] != "after reconnect" {
		t.Fatalf("after the reconnection: got %v", m)
	}
	if n := logCount(logs, "a tracked table was renamed or moved"); n != 1 {
		t.Errorf("%d rename warnings, want 1", n)
	}
	if logCount(logs, "public.guarantees_guarantee=guarantee") == 0 {
		t.Error("the warning does not give the --tables fix")
	}

	pg.Exec(t, `CREATE SCHEMA app; ALTER TABLE guarantees_guarantee SET SCHEMA app`)
	pg.Exec(t, `UPDATE app.guarantees_guarantee SET elector_name = 'moved' WHERE elector_name = 'before'`)
	if m := c.change(t); m["data"].(map[string]any)["elector_name"] != "moved" || m["action"] != "updated" {
		t.Fatalf("after the move: got %v", m)
	}
	if n := logCount(logs, "a tracked table was renamed or moved"); n != 2 {
		t.Errorf("%d rename warnings after the move, want 2", n)
	}
	app.stop(t)

	se := runUntilSetupError(t, pg.URL())
	if !strings.Contains(se.Problem, "public.guarantee does not exist") || !strings.Contains(se.Fix, "--tables app.guarantees_guarantee=guarantee") {
		t.Errorf("next start: %v, want the missing table with the --tables fix", se)
	}
	found := false
	for _, f := range cdc.Check(context.Background(), cdc.CheckConfig{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: testConfig(t, pg.URL()).Tables}) {
		if f.Check == "table" && f.Level == cdc.LevelProblem && strings.Contains(f.Fix, "--tables app.guarantees_guarantee=guarantee") {
			found = true
		}
	}
	if !found {
		t.Error("walcast check does not suggest the new name of the missing table")
	}
	cfg = testConfig(t, pg.URL(), "--tables", "app.guarantees_guarantee=guarantee,attendance,vote_count,election_results")
	cfg.Live.DashboardInterval = 0
	app = startApp(t, cfg)
	app.waitStreaming(t)
	c = dial(t, app.addr, token(t, 12, "supervisor", 3), "")
	pg.Exec(t, `INSERT INTO app.guarantees_guarantee (committee_id, user_id, elector_name) VALUES (3, 12, 'new name')`)
	if m := c.change(t); m["table"] != "app.guarantees_guarantee" || m["data"].(map[string]any)["elector_name"] != "new name" {
		t.Fatalf("with the new name: got %v", m)
	}
}

// A publication name is taken exactly: an upper-case name, or one with a
// quote and a comma, streams that publication and no other, end to end.
func TestPublicationNameIsExact(t *testing.T) {
	pg := electionDB(t)
	// A lower-case namesake that publishes no guarantee: streaming it by
	// mistake would lose every guarantee change.
	pg.Exec(t, `CREATE PUBLICATION walcast_pub FOR TABLE attendance`)
	for i, name := range []string{"Walcast_Pub", `we"ird, pub`} {
		t.Run(name, func(t *testing.T) {
			slot := []string{"upper", "weird"}[i]
			cfg := testConfig(t, pg.URL(), "--publication", name, "--slot", slot)
			cfg.Live.DashboardInterval = 0
			app := startApp(t, cfg)
			app.waitStreaming(t)
			c := dial(t, app.addr, token(t, 1, "admin"), "")
			pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, $1)`, name)
			if m := c.change(t); m["data"].(map[string]any)["elector_name"] != name {
				t.Fatalf("got %v", m)
			}
			if st := app.app.Status(); st.Sessions != 1 {
				t.Errorf("%d replication sessions, want 1 (no reconnects)", st.Sessions)
			}
			app.stop(t)
		})
	}
	if _, _, err := parseConfig(cmdRun, []string{"--publication", strings.Repeat("p", 64)}, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "truncates") {
		t.Errorf("a 64-byte publication name: %v, want refused", err)
	}
}
