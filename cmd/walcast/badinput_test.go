package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/internal/testenv"
)

// Bad flags and environment get one line saying which and why, and exit 2.
func TestBadConfigurationExitsTwoWithOneLine(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"unknown flag", []string{"run", "--nope"}, nil, "flag provided but not defined: -nope"},
		{"bad history flag", []string{"run", "--history", "lots"}, nil, `invalid value "lots" for flag -history: want a positive integer`},
		{"bad history env", []string{"run"}, map[string]string{"WALCAST_HISTORY": "-1"}, `WALCAST_HISTORY="-1": want a positive integer`},
		{"bad slot", []string{"run", "--slot", "Bad-Slot"}, nil, "want lower-case letters, digits and underscores"},
		{"bad tables", []string{"run", "--tables", "guarantee,ballots"}, nil, `unknown kind "ballots"`},
		{"bad redis url", []string{"run", "--redis-url", "http://x"}, nil, "want redis://"},
		{"bad log level", []string{"run", "--log-level", "loud"}, nil, "want debug, info, warn or error"},
		{"no database", []string{"run", "--jwt-secret", "s"}, nil, "--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"},
		{"no key", []string{"run", "--database-url", "postgres://x/y"}, nil, "no JWT key configured"},
		{"password redacted", []string{"run"}, map[string]string{"DATABASE_URL": "postgres://u:hunter2@h/d", "WALCAST_HISTORY": "x"}, "WALCAST_HISTORY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := realMain(tc.args, &out, &errOut, func(k string) string { return tc.env[k] })
			msg := errOut.String()
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q does not say %q", msg, tc.want)
			}
			if tc.name != "unknown command" && strings.Count(strings.TrimSpace(msg), "\n") > 0 {
				t.Errorf("stderr is more than one line: %q", msg)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("stderr leaks a password: %q", msg)
			}
		})
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	env := map[string]string{"WALCAST_SLOT": "from_env", "DATABASE_URL": "postgres://fallback/db", "WALCAST_DATABASE_URL": "postgres://primary/db"}
	cfg, _, err := parseConfig(cmdRun, []string{"--slot", "from_flag"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Slot != "from_flag" {
		t.Errorf("slot = %q, want the flag's value", cfg.Slot)
	}
	if cfg.DatabaseURL != "postgres://primary/db" {
		t.Errorf("database url = %q, want WALCAST_DATABASE_URL before DATABASE_URL", cfg.DatabaseURL)
	}
}

// runUntilSetupError runs walcast against a badly set up database and
// returns the setup error it stops with.
func runUntilSetupError(t *testing.T, dbURL string, extra ...string) *cdc.SetupError {
	t.Helper()
	app := NewApp(cmdRun, testConfig(t, dbURL, extra...), discardLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := app.Run(ctx)
	var se *cdc.SetupError
	if !errors.As(err, &se) {
		t.Fatalf("run returned %v, want a setup error", err)
	}
	return se
}

func TestDatabaseSetupProblemsStopWithTheFix(t *testing.T) {
	t.Run("wal_level replica", func(t *testing.T) {
		pg := testenv.StartPostgres(t, testenv.WithSetting("wal_level", "replica"))
		var out, errOut bytes.Buffer
		code := realMain([]string{"run", "--database-url", pg.URL(), "--listen", "127.0.0.1:0", "--jwt-secret", "s", "--log-level", "error"},
			&out, &errOut, func(string) string { return "" })
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, want := range []string{"wal_level is replica", "ALTER SYSTEM SET wal_level = logical", "restart PostgreSQL"} {
			if !strings.Contains(errOut.String(), want) {
				t.Errorf("stderr %q does not say %q", errOut.String(), want)
			}
		}
	})

	pg := electionDB(t)
	t.Run("missing table", func(t *testing.T) {
		se := runUntilSetupError(t, pg.URL(), "--tables", "guarantee,ballots=vote_count")
		if !strings.Contains(se.Problem, "public.ballots does not exist") {
			t.Errorf("problem %q does not name the table", se.Problem)
		}
	})
	t.Run("role without REPLICATION", func(t *testing.T) {
		pg.Exec(t, `CREATE ROLE app LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO app`)
		url := strings.Replace(pg.URL(), "postgres://postgres@", "postgres://app@", 1)
		se := runUntilSetupError(t, url)
		if !strings.Contains(se.Fix, `ALTER ROLE app WITH REPLICATION`) {
			t.Errorf("fix %q does not grant REPLICATION", se.Fix)
		}
	})
	t.Run("publication lacks a table", func(t *testing.T) {
		pg.Exec(t, `CREATE PUBLICATION partial FOR TABLE guarantee`)
		se := runUntilSetupError(t, pg.URL(), "--publication", "partial", "--slot", "partial")
		if !strings.Contains(se.Fix, `ALTER PUBLICATION partial ADD TABLE public.attendance`) {
			t.Errorf("fix %q does not add the table", se.Fix)
		}
	})
}

// An unreachable database at start is retried: walcast serves, reports not
// ready, and streams once the database is back.
func TestUnreachableDatabaseAtStartIsRetried(t *testing.T) {
	pg := electionDB(t)
	pg.Stop(t)
	app := startApp(t, testConfig(t, pg.URL()))
	time.Sleep(300 * time.Millisecond) // let a few connection attempts fail
	code, body := httpGet(t, "http://"+app.addr+"/readyz")
	if code != 503 || !strings.Contains(body, "not streaming") {
		t.Errorf("/readyz = %d %s, want 503 saying replication is not streaming", code, body)
	}
	pg.Start(t)
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id) VALUES (1, 1)`)
	c.change(t)
	if code, body := httpGet(t, "http://"+app.addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s after the database came back", code, body)
	}
}

// A second walcast on the same slot waits (standby) and takes over when the
// first stops, losing nothing.
func TestSecondCaptureWaitsForTheSlotAndTakesOver(t *testing.T) {
	pg := electionDB(t)
	first := startApp(t, testConfig(t, pg.URL()))
	first.waitStreaming(t)
	second := startApp(t, testConfig(t, pg.URL()))
	deadline := time.Now().Add(10 * time.Second)
	for second.app.Status().Waiting == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if w := second.app.Status().Waiting; !strings.Contains(w, "is active for PID") {
		t.Fatalf("second walcast is not waiting for the slot: %+v", second.app.Status())
	}
	c := dial(t, second.addr, token(t, 1, "admin"), "")
	first.stop(t)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after takeover')`)
	start := time.Now()
	m := c.change(t)
	if m["data"].(map[string]any)["elector_name"] != "after takeover" {
		t.Fatalf("got %v", m)
	}
	t.Logf("standby delivered the first change %v after the holder stopped", time.Since(start).Round(time.Millisecond))
}
