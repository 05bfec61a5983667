package cdc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// checkRun runs Check with a deadline, so a hung server fails the test
// instead of stalling it.
func checkRun(t *testing.T, cfg CheckConfig) []Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs := Check(ctx, cfg)
	t.Logf("findings:\n%s", checkFormat(fs))
	return fs
}

func checkFormat(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %-8s %-18s %s\n", f.Level, f.Check, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(&b, "           fix: %s\n", f.Fix)
		}
	}
	return b.String()
}

// checkWant fails t unless a finding of check at level has every one of
// texts in its Detail or Fix, and returns it.
func checkWant(t *testing.T, fs []Finding, check string, level Level, texts ...string) Finding {
	t.Helper()
next:
	for _, f := range fs {
		if f.Check != check || f.Level != level {
			continue
		}
		for _, s := range texts {
			if !strings.Contains(f.Detail+"\n"+f.Fix, s) {
				continue next
			}
		}
		return f
	}
	t.Fatalf("no %s finding for %q containing %q in:\n%s", level, check, texts, checkFormat(fs))
	return Finding{}
}

// checkWantAtMost fails t when a finding is worse than level.
func checkWantAtMost(t *testing.T, fs []Finding, level Level) {
	t.Helper()
	for _, f := range fs {
		if f.Level > level {
			t.Errorf("unexpected %s %q: %s (fix: %s)", f.Level, f.Check, f.Detail, f.Fix)
		}
	}
}

func checkTables(t *testing.T, spec string) []schema.Table {
	t.Helper()
	tables, err := schema.ParseTables(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tables
}

// slotNow reads the slot's row through the one slot reader.
func slotNow(t *testing.T, dbURL, slot string) SlotInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := SlotStatus(ctx, dbURL, slot)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheck runs the checks against one server with a database per case.
// Slots are the server's, not a database's, so each case names its own.
func TestCheck(t *testing.T) {
	t.Parallel()
	e := &checkEnv{pg: testenv.StartPostgres(t), defaults: checkTables(t, schema.DefaultTables)}
	for _, c := range []struct {
		name string
		run  func(*testing.T, *checkEnv)
	}{
		{"healthy", checkHealthy},
		{"missing table", checkMissingTable},
		{"replica identity", checkReplicaIdentity},
		{"role without replication", checkRoleWithoutReplication},
		{"publication lacks tables", checkPublicationLacksTables},
		{"existing slot", checkExistingSlot},
		{"slot with another plugin", checkSlotWithAnotherPlugin},
		{"unknown database", checkUnknownDatabase},
		{"live state", checkLiveState},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, e)
		})
	}
}

// checkEnv is TestCheck's server and the default tracked tables.
type checkEnv struct {
	pg       *testenv.Postgres
	defaults []schema.Table
}

// electionDB creates a database with the election schema.
func (e *checkEnv) electionDB(t *testing.T, name string) string {
	t.Helper()
	dbURL := e.pg.CreateDatabase(t, name)
	e.pg.ExecDB(t, dbURL, schema.SQL)
	return dbURL
}

func checkHealthy(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "healthy")
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "healthy", Publication: "walcast", Tables: e.defaults})
	checkWantAtMost(t, fs, LevelInfo)
	checkWant(t, fs, "connection", LevelOK, "/healthy as postgres")
	checkWant(t, fs, "wal_level", LevelOK, "logical")
	checkWant(t, fs, "replication slots", LevelOK, "max_replication_slots = 10")
	checkWant(t, fs, "wal senders", LevelOK, "max_wal_senders = 10")
	checkWant(t, fs, "role", LevelOK, "superuser")
	for _, tbl := range e.defaults {
		checkWant(t, fs, "replica identity", LevelOK, tbl.Qualified()+" has REPLICA IDENTITY FULL")
	}
	checkWant(t, fs, "publication", LevelInfo, "first start",
		"CREATE PUBLICATION walcast FOR TABLE public.guarantee, public.attendance, public.vote_count, public.election_results;")
	checkWant(t, fs, "slot", LevelInfo, "first start")
}

func checkMissingTable(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "missing_table")
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "missing_table", Publication: "walcast",
		Tables: checkTables(t, "guarantee,election.absent=attendance")})
	checkWant(t, fs, "table", LevelProblem, "election.absent", "does not exist", "schema/election.sql", "--tables name=attendance")
	checkWant(t, fs, "replica identity", LevelOK, "public.guarantee")
}

func checkReplicaIdentity(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "replica_identity")
	e.pg.ExecDB(t, dbURL, `ALTER TABLE guarantee REPLICA IDENTITY NOTHING;
		ALTER TABLE attendance REPLICA IDENTITY DEFAULT;
		CREATE TABLE "Vote Count" (committee_id bigint, votes int);
		CREATE VIEW results_view AS SELECT * FROM election_results`)
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "replica_identity", Publication: "walcast",
		Tables: checkTables(t, "guarantee,attendance,Vote Count=vote_count,results_view=election_results")})
	checkWant(t, fs, "replica identity", LevelProblem, "public.guarantee has REPLICA IDENTITY NOTHING",
		"ALTER TABLE public.guarantee REPLICA IDENTITY FULL;")
	checkWant(t, fs, "replica identity", LevelWarning, "public.attendance has REPLICA IDENTITY DEFAULT (its primary key)",
		"ALTER TABLE public.attendance REPLICA IDENTITY FULL;")
	// No primary key; the name needs quoting in the fix.
	checkWant(t, fs, "replica identity", LevelProblem, "public.Vote Count has REPLICA IDENTITY DEFAULT but no primary key",
		`ALTER TABLE public."Vote Count" REPLICA IDENTITY FULL;`)
	checkWant(t, fs, "table", LevelProblem, "public.results_view is a view")
	checkWant(t, fs, CheckState, LevelWarning, "public.Vote Count has no primary key", `ALTER TABLE public."Vote Count" ADD PRIMARY KEY`)
}

// checkLiveState: the state's status as the bus reports it, missing,
// incomplete, off for a table, or ready.
func checkLiveState(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "live_state")
	run := func(rep StateReport, err error) []Finding {
		return checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "live_state", Publication: "walcast", Tables: e.defaults,
			State: func(context.Context) (StateReport, error) { return rep, err }})
	}
	checkWant(t, run(StateReport{}, nil), CheckState, LevelWarning, "missing or incomplete", "walcast state rebuild")
	checkWant(t, run(StateReport{}, errors.New("connection refused")), CheckState, LevelProblem, "connection refused", "--redis-url")
	all := map[string]TableReport{}
	for _, tbl := range e.defaults {
		all[tbl.Qualified()] = TableReport{Rows: 10}
	}
	fs := run(StateReport{Ready: true, Floor: schema.Position{LSN: 99, Seq: 1}, Tables: all}, nil)
	checkWant(t, fs, CheckState, LevelOK, "ready: 40 rows, seeded at 99-1")
	delete(all, "public.attendance")
	all["public.guarantee"] = TableReport{Off: true, Reason: "over --state-max-rows 5"}
	fs = run(StateReport{Ready: true, Tables: all}, nil)
	checkWant(t, fs, CheckState, LevelWarning, "no rows of public.attendance", "walcast state rebuild")
	checkWant(t, fs, CheckState, LevelWarning, "off for public.guarantee (over --state-max-rows 5)", "raise --state-max-rows")
}

func checkRoleWithoutReplication(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "role_app")
	e.pg.Exec(t, "CREATE ROLE app LOGIN")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("app")
	fs := checkRun(t, CheckConfig{DatabaseURL: u.String(), Slot: "role_app", Publication: "walcast", Tables: e.defaults})
	checkWant(t, fs, "connection", LevelOK, "as app")
	checkWant(t, fs, "role", LevelProblem, "app has neither REPLICATION nor superuser", "ALTER ROLE app WITH REPLICATION;")
	// postgres owns the tables, so app cannot create the publication.
	checkWant(t, fs, "publication", LevelProblem, "cannot create it", "CREATE PUBLICATION walcast FOR TABLE")

	e.pg.Exec(t, "CREATE ROLE replicator LOGIN REPLICATION")
	u.User = url.User("replicator")
	fs = checkRun(t, CheckConfig{DatabaseURL: u.String(), Slot: "role_app", Publication: "walcast", Tables: e.defaults})
	checkWant(t, fs, "role", LevelOK, "replicator has REPLICATION")
}

func checkPublicationLacksTables(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "publication")
	e.pg.ExecDB(t, dbURL, `CREATE PUBLICATION walcast FOR TABLE guarantee, attendance WHERE (attended);
		CREATE PUBLICATION inserts_only FOR ALL TABLES WITH (publish = 'insert')`)
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "publication", Publication: "walcast", Tables: e.defaults})
	checkWant(t, fs, "publication", LevelProblem, "does not include public.vote_count, public.election_results",
		"ALTER PUBLICATION walcast ADD TABLE public.vote_count, public.election_results;")
	checkWant(t, fs, "publication", LevelProblem, "public.attendance with a row filter", "refuses to start",
		"ALTER PUBLICATION walcast DROP TABLE public.attendance; ALTER PUBLICATION walcast ADD TABLE public.attendance;")

	e.pg.ExecDB(t, dbURL, `CREATE PUBLICATION cols FOR TABLE guarantee (id, notes), attendance (id, committee_id, user_id, attended), vote_count, election_results`)
	fs = checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "publication", Publication: "cols", Tables: e.defaults})
	checkWant(t, fs, "publication", LevelProblem, "publishes public.guarantee without committee_id, user_id", "refuses to start")
	checkWant(t, fs, "publication", LevelWarning, "only some rows or columns of public.attendance")

	fs = checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "publication", Publication: "inserts_only", Tables: e.defaults})
	checkWantAtMost(t, fs, LevelWarning)
	checkWant(t, fs, "publication", LevelWarning, "does not publish updates or deletes",
		"ALTER PUBLICATION inserts_only SET (publish = 'insert, update, delete, truncate');")
}

func checkExistingSlot(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "existing_slot")
	e.pg.ExecDB(t, dbURL, `CREATE PUBLICATION walcast FOR TABLE guarantee, attendance, vote_count, election_results`)
	e.pg.ExecDB(t, dbURL, `SELECT pg_create_logical_replication_slot('walcast', 'pgoutput')`)
	e.pg.ExecDB(t, dbURL, `INSERT INTO committee (code, name) SELECT 'C' || i, 'Committee ' || i FROM generate_series(1, 1000) i`)
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "walcast", Publication: "walcast", Tables: e.defaults})
	checkWantAtMost(t, fs, LevelOK)
	checkWant(t, fs, "publication", LevelOK, "walcast publishes the 4 tracked tables")
	checkWant(t, fs, "slot", LevelOK, "walcast uses pgoutput, is inactive", "confirmed up to")
	f := checkWant(t, fs, "slot WAL", LevelOK, "wal_status reserved", "retains")
	if strings.Contains(f.Detail, "retains 0 bytes") {
		t.Errorf("slot WAL detail %q: want the WAL written since the slot was made", f.Detail)
	}

	// The same slot, seen from a database it does not belong to.
	other := e.electionDB(t, "not_the_slots")
	fs = checkRun(t, CheckConfig{DatabaseURL: other, Slot: "walcast", Publication: "walcast", Tables: e.defaults})
	checkWant(t, fs, "slot", LevelProblem, "belongs to database existing_slot, not not_the_slots", "another --slot")
}

func checkSlotWithAnotherPlugin(t *testing.T, e *checkEnv) {
	dbURL := e.electionDB(t, "test_decoding")
	e.pg.ExecDB(t, dbURL, `SELECT pg_create_logical_replication_slot('decoder', 'test_decoding')`)
	fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "decoder", Publication: "walcast", Tables: e.defaults})
	checkWant(t, fs, "slot", LevelProblem, "uses plugin test_decoding, walcast needs pgoutput",
		"SELECT pg_drop_replication_slot('decoder');")
}

func checkUnknownDatabase(t *testing.T, e *checkEnv) {
	fs := checkRun(t, CheckConfig{DatabaseURL: e.pg.DatabaseURL("no_such_db"), Slot: "x", Publication: "walcast", Tables: e.defaults})
	if len(fs) != 1 {
		t.Fatalf("got %d findings, want one:\n%s", len(fs), checkFormat(fs))
	}
	checkWant(t, fs, "connection", LevelProblem, "no_such_db", `CREATE DATABASE "no_such_db";`)
}

func TestCheckWalLevelReplica(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.WithSetting("wal_level", "replica"))
	pg.Exec(t, schema.SQL)
	fs := checkRun(t, CheckConfig{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
		Tables: checkTables(t, schema.DefaultTables)})
	checkWant(t, fs, "wal_level", LevelProblem, "wal_level is replica",
		"ALTER SYSTEM SET wal_level = logical;", "restart PostgreSQL")
}

// TestCheckSlotLimitAndLostSlot fills the server's only slot, then lets
// PostgreSQL invalidate it by writing more WAL than max_slot_wal_keep_size.
func TestCheckSlotLimitAndLostSlot(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t,
		testenv.WithSetting("max_replication_slots", "1"),
		testenv.WithSetting("max_slot_wal_keep_size", "1MB"))
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "SELECT pg_create_logical_replication_slot('other', 'pgoutput')")
	cfg := CheckConfig{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
		Tables: checkTables(t, schema.DefaultTables)}

	fs := checkRun(t, cfg)
	checkWant(t, fs, "replication slots", LevelProblem, "all 1 replication slots", "ALTER SYSTEM SET max_replication_slots = 10;")

	cfg.Slot = "other"
	fs = checkRun(t, cfg)
	checkWant(t, fs, "replication slots", LevelOK, "max_replication_slots = 1, 1 in use")
	checkWant(t, fs, "slot WAL", LevelOK, "max_slot_wal_keep_size")

	// Each round fills the rest of a 16 MB WAL segment; the checkpoint
	// removes the segments the limit no longer keeps, and the slot with
	// them.
	for round := 0; slotNow(t, pg.URL(), "other").WALStatus != "lost"; round++ {
		if round == 10 {
			t.Fatalf("slot still not lost after %d rounds of WAL; wal_status %s", round, slotNow(t, pg.URL(), "other").WALStatus)
		}
		pg.Exec(t, "INSERT INTO committee (code, name) VALUES ('R"+strconv.Itoa(round)+"', 'round')")
		pg.Exec(t, "SELECT pg_switch_wal()")
		pg.Exec(t, "CHECKPOINT")
	}
	fs = checkRun(t, cfg)
	f := checkWant(t, fs, "slot WAL", LevelProblem, "other is lost", "SELECT pg_drop_replication_slot('other');", "refetch")
	if !strings.Contains(f.Fix, "\n") {
		t.Errorf("lost slot fix %q: want numbered steps on separate lines", f.Fix)
	}
}

// TestCheckUnreachableServer needs no server: nothing listens on the port.
func TestCheckUnreachableServer(t *testing.T) {
	t.Parallel()
	const secret = "Sup3rSecretPw"
	port := testenv.FreePort(t)
	for _, dbURL := range []string{
		fmt.Sprintf("postgres://walcast:%s@127.0.0.1:%d/election?sslmode=disable&connect_timeout=5", secret, port),
		"postgres://walcast:" + secret + "@127.0.0.1:notaport/election", // does not parse
	} {
		fs := checkRun(t, CheckConfig{DatabaseURL: dbURL, Slot: "walcast", Publication: "walcast",
			Tables: checkTables(t, schema.DefaultTables)})
		if len(fs) != 1 {
			t.Fatalf("got %d findings, want one:\n%s", len(fs), checkFormat(fs))
		}
		f := checkWant(t, fs, "connection", LevelProblem, "--database-url")
		if strings.Contains(f.Detail+f.Fix, secret) {
			t.Errorf("finding shows the password: %s / %s", f.Detail, f.Fix)
		}
	}
}

// TestCheckSlotWALLevels covers the retention levels a test server cannot
// reach quickly: more than a gigabyte of WAL, and an unreserved slot.
func TestCheckSlotWALLevels(t *testing.T) {
	for _, tc := range []struct {
		name  string
		w     SlotInfo
		level Level
		texts []string
	}{
		{"small", SlotInfo{WALStatus: "reserved", RetainedWAL: 56, RetainedWALPretty: "56 bytes"}, LevelOK,
			[]string{"wal_status reserved, retains 56 bytes of WAL"}},
		{"limited", SlotInfo{WALStatus: "reserved", RetainedWAL: 56, RetainedWALPretty: "56 bytes", SafeWALSize: 1 << 30, SafeWALSizePretty: "1024 MB"}, LevelOK,
			[]string{"1024 MB more before PostgreSQL invalidates it"}},
		{"large", SlotInfo{WALStatus: "extended", RetainedWAL: 3 << 30, RetainedWALPretty: "3072 MB"}, LevelWarning,
			[]string{"retains 3072 MB", "more than 1 GB", "SELECT pg_drop_replication_slot('s');"}},
		{"unreserved", SlotInfo{WALStatus: "unreserved", RetainedWAL: 1 << 20, RetainedWALPretty: "1024 kB", SafeWALSize: -100, SafeWALSizePretty: "-100 bytes"}, LevelWarning,
			[]string{"lost at the next checkpoint", "max_slot_wal_keep_size"}},
		{"lost", SlotInfo{WALStatus: "lost", RetainedWAL: -1, SafeWALSize: NoWALLimit}, LevelProblem,
			[]string{"s is lost", "1. SELECT pg_drop_replication_slot('s');\n2. restart walcast"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.w.Name = "s"
			checkWant(t, []Finding{slotWALFinding(tc.w, 0)}, "slot WAL", tc.level, tc.texts...)
		})
	}
	// --max-retained-wal moves the line.
	checkWant(t, []Finding{slotWALFinding(SlotInfo{Name: "s", WALStatus: "reserved", RetainedWAL: 600 << 20, RetainedWALPretty: "600 MB"}, 512<<20)},
		"slot WAL", LevelWarning, "more than 512 MB")
	for l, want := range map[Level]string{LevelOK: "ok", LevelInfo: "info", LevelWarning: "warning", LevelProblem: "problem"} {
		if l.String() != want {
			t.Errorf("Level(%d).String() = %q, want %q", int(l), l.String(), want)
		}
	}
}
