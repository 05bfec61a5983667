package main

import (
	"strings"
	"testing"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

func checkNoEnv(string) string { return "" }

func TestCheckCommandReady(t *testing.T) {
	t.Parallel()
	checkReport(t, 0, nil,
		"ok       wal_level            logical\n",
		"ok       replica identity     public.guarantee has REPLICA IDENTITY FULL\n",
		"info     slot                 slot walcast does not exist yet",
		"\nwalcast check: ready\n",
	)
}

func TestCheckCommandWalLevelReplica(t *testing.T) {
	t.Parallel()
	checkReport(t, 1, []testenv.PGOption{testenv.WithSetting("wal_level", "replica")},
		"problem  wal_level            wal_level is replica",
		"\n         fix: ALTER SYSTEM SET wal_level = logical;",
		"\nwalcast check: 1 problem\n",
	)
}

// checkReport runs `walcast check` on a new PostgreSQL (started with opts)
// holding the election schema, and checks its exit status, that stderr is
// empty (the report says it all) and that the report holds lines.
func checkReport(t *testing.T, wantCode int, opts []testenv.PGOption, lines ...string) {
	t.Helper()
	pg := testenv.StartPostgres(t, opts...)
	pg.Exec(t, schema.SQL)
	var out, errOut strings.Builder
	code := realMain([]string{"check", "--database-url", pg.URL()}, &out, &errOut, checkNoEnv)
	t.Logf("stdout:\n%s", out.String())
	if code != wantCode {
		t.Fatalf("exit status %d, want %d; stderr: %s", code, wantCode, errOut.String())
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr: %q, want nothing: the report says it all", errOut.String())
	}
	for _, line := range lines {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q", line)
		}
	}
}

func TestCheckCommandNeedsDatabaseURL(t *testing.T) {
	var out, errOut strings.Builder
	if code := realMain([]string{"check"}, &out, &errOut, checkNoEnv); code != 2 {
		t.Fatalf("exit status %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), "--database-url") {
		t.Errorf("stderr %q does not name --database-url", errOut.String())
	}
}

func TestCheckReportFormat(t *testing.T) {
	var out strings.Builder
	problems := writeFindings(&out, []cdc.Finding{
		{Check: "wal_level", Level: cdc.LevelOK, Detail: "logical"},
		{Check: "replica identity", Level: cdc.LevelWarning, Detail: "public.attendance has REPLICA IDENTITY DEFAULT", Fix: "ALTER TABLE public.attendance REPLICA IDENTITY FULL;"},
		{Check: "slot WAL", Level: cdc.LevelProblem, Detail: "slot walcast is lost", Fix: "1. drop it\n2. restart walcast"},
		{Check: "a check with a long name", Level: cdc.LevelWarning, Detail: "d"},
	})
	if problems != 1 {
		t.Errorf("problems = %d, want 1", problems)
	}
	want := `ok       wal_level                 logical
warning  replica identity          public.attendance has REPLICA IDENTITY DEFAULT
         fix: ALTER TABLE public.attendance REPLICA IDENTITY FULL;
problem  slot WAL                  slot walcast is lost
         fix: 1. drop it
              2. restart walcast
warning  a check with a long name  d
walcast check: 1 problem, 2 warnings
`
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	writeFindings(&out, []cdc.Finding{{Check: "role", Level: cdc.LevelWarning, Detail: "d"}})
	if !strings.HasSuffix(out.String(), "\nwalcast check: ready, 1 warning\n") {
		t.Errorf("report with one warning:\n%s", out.String())
	}
}
