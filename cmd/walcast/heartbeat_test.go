package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/internal/testenv"
)

// startLogged runs walcast's mode in process like startMode, and also
// keeps its log for the test to read.
func startLogged(t *testing.T, mode string, cfg *Config) (*running, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	return launchApp(t, NewApp(mode, cfg, log)), logs
}

// pauseProcess stops a process (SIGSTOP) until the returned function
// continues it; cleanup continues it in any case, so the server can stop.
func pauseProcess(t *testing.T, pid int) (resume func()) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		// Pausing the walsender needs root (it runs as the postgres user);
		// CI runs as root, so there this is a failure, not a skip.
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot pause PID %d: %v", pid, err)
		}
		t.Skipf("cannot pause PID %d: %v (run as root)", pid, err)
	}
	resume = func() { _ = syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(resume)
	return resume
}

// metric returns a sample's value from /metrics, or NaN-like false.
func metric(t *testing.T, addr, sample string) (float64, bool) {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// eventually polls cond every 20 ms until it holds, failing after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A paused walsender is a stall: heartbeats stop coming back, /readyz
// turns red saying so, one error names the slot. The server sends
// nothing, so walcast closes the connection and terminates its own
// walsender, which still holds the slot; the termination takes effect
// when the walsender continues: walcast streams on a new session at once,
// /readyz turns green and the change committed meanwhile arrives.
func TestReadinessFollowsReplicationStalls(t *testing.T) {
	pg := electionDB(t)
	app, logs := startLogged(t, cmdRun, testConfig(t, pg.URL(), "--heartbeat-interval", "200ms", "--stall-threshold", "2s"))
	app.waitStreaming(t)
	waitReady(t, app.addr)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	eventually(t, 10*time.Second, "a heartbeat came back", func() bool { return !app.app.Status().LastHeartbeat.IsZero() })
	st := app.app.Status()
	t.Logf("heartbeat round trip %v", st.HeartbeatLag)
	if st.Liveness != "heartbeat" || st.HeartbeatLag <= 0 || st.HeartbeatLag > 2*time.Second {
		t.Errorf("status = %+v, want heartbeats with a short round trip", st)
	}
	if _, body := httpGet(t, "http://"+app.addr+"/readyz"); !strings.Contains(body, `"heartbeat":"lag `) {
		t.Errorf("/readyz = %s, want the heartbeat lag", body)
	}
	if v, ok := metric(t, app.addr, "walcast_heartbeat_lag_seconds"); !ok || v <= 0 {
		t.Errorf("walcast_heartbeat_lag_seconds = %v (%v)", v, ok)
	}
	if v, _ := metric(t, app.addr, "walcast_replication_stalled"); v != 0 {
		t.Errorf("walcast_replication_stalled = %v before the stall", v)
	}
	eventually(t, 10*time.Second, "the slot's WAL was read", func() bool { return app.app.Status().WALStatus != "" })
	if v, ok := metric(t, app.addr, `walcast_slot_wal_status{status="reserved"}`); !ok || v != 1 {
		t.Errorf(`walcast_slot_wal_status{status="reserved"} = %v (%v)`, v, ok)
	}
	if _, ok := metric(t, app.addr, "walcast_slot_retained_wal_bytes"); !ok {
		t.Errorf("no walcast_slot_retained_wal_bytes")
	}

	resume := pauseProcess(t, walsenderPID(t, pg.URL(), "walcast"))
	paused := time.Now()
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'during the stall')`)
	var body string
	eventually(t, 15*time.Second, "/readyz reports the stall", func() bool {
		var code int
		code, body = httpGet(t, "http://"+app.addr+"/readyz")
		// The public /readyz gives the state; the detail is on --internal-listen.
		return code == 503 && strings.Contains(body, `"replication":"stalled"`)
	})
	t.Logf("/readyz red %v after the walsender was paused: %s", time.Since(paused).Round(time.Millisecond), body)
	if v, _ := metric(t, app.addr, "walcast_replication_stalled"); v != 1 {
		t.Errorf("walcast_replication_stalled = %v during the stall", v)
	}
	// The connection may be closed as silent a moment before the oldest
	// heartbeat is a threshold old; its age goes on growing meanwhile.
	eventually(t, 5*time.Second, "walcast_heartbeat_lag_seconds reaches the threshold during the stall", func() bool {
		v, _ := metric(t, app.addr, "walcast_heartbeat_lag_seconds")
		return v >= 2
	})
	eventually(t, 5*time.Second, "the stall is logged", func() bool { return strings.Contains(logs.String(), "replication stalled") })
	time.Sleep(1500 * time.Millisecond) // the stall goes on: it must not be logged again

	eventually(t, 10*time.Second, "walcast terminates its old walsender", func() bool {
		return strings.Contains(logs.String(), "terminated this process's previous walsender")
	})
	resume()
	continued := time.Now()
	waitReady(t, app.addr)
	t.Logf("/readyz green %v after the walsender continued", time.Since(continued).Round(time.Millisecond))
	if st := app.app.Status(); st.Sessions != 2 {
		t.Errorf("sessions = %d, want 2: the stalled one replaced", st.Sessions)
	}
	if got := c.change(t)["data"].(map[string]any)["elector_name"]; got != "during the stall" {
		t.Fatalf("got %v", got)
	}
	eventually(t, 5*time.Second, "the recovery is logged", func() bool { return strings.Contains(logs.String(), "replication moving again") })
	out := logs.String()
	if n := strings.Count(out, "replication stalled"); n != 1 {
		t.Errorf("stall logged %d times, want once", n)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "replication stalled") && (!strings.Contains(line, "level=ERROR") || !strings.Contains(line, "slot=walcast")) {
			t.Errorf("stall line %q: want an error naming the slot", line)
		}
	}
}

// PostgreSQL invalidates the slot of a running walcast (it fell behind
// max_slot_wal_keep_size): the retained-WAL warning comes first, then the
// connected clients get resync_required and walcast stops with the
// recovery step.
func TestLostSlotWhileRunningResyncsClientsAndStops(t *testing.T) {
	pg := electionDB(t, testenv.WithSetting("max_slot_wal_keep_size", "1MB"))
	app, logs := startLogged(t, cmdRun, testConfig(t, pg.URL(), "--heartbeat-interval", "200ms", "--max-retained-wal", "32MB"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'before')`)
	c.change(t)

	// A paused walsender holds the slot back while WAL piles up.
	pg.Exec(t, `CREATE TABLE filler (n int)`)
	resume := pauseProcess(t, walsenderPID(t, pg.URL(), "walcast"))
	for i := 0; i < 4; i++ {
		pg.Exec(t, `INSERT INTO filler VALUES (1)`)
		pg.Exec(t, `SELECT pg_switch_wal()`)
	}
	eventually(t, 10*time.Second, "capture sees the WAL retained", func() bool { return app.app.Status().RetainedWAL > 32<<20 })
	eventually(t, 5*time.Second, "the retained WAL warning", func() bool {
		return strings.Contains(logs.String(), "replication slot retains more WAL than --max-retained-wal")
	})
	if v, ok := metric(t, app.addr, "walcast_slot_retained_wal_bytes"); !ok || v <= 32<<20 {
		t.Errorf("walcast_slot_retained_wal_bytes = %v (%v)", v, ok)
	}
	t.Logf("slot status while held back: %+v", app.app.Status())

	// The checkpoint invalidates the slot: PostgreSQL terminates the
	// walsender (once it continues) and marks the slot lost.
	checkpoint := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(context.Background(), pg.URL())
		if err == nil {
			_, err = conn.Exec(context.Background(), "CHECKPOINT")
			conn.Close(context.Background())
		}
		checkpoint <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the checkpoint reach the slot
	resume()
	if err := <-checkpoint; err != nil {
		t.Fatal(err)
	}
	for {
		m := c.next(t, 20*time.Second)
		if m["type"] == "resync_required" {
			t.Logf("client got %v", m)
			break
		}
	}
	select {
	case err := <-app.done:
		app.cancel = nil
		var se *cdc.SetupError
		if !errors.As(err, &se) || !strings.Contains(se.Problem, "invalidated by PostgreSQL (wal_status lost)") || !strings.Contains(se.Fix, "walcast slot drop --slot walcast --yes") {
			t.Errorf("walcast returned %v, want the lost-slot setup error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("walcast still runs with a lost slot")
	}
	if n := strings.Count(logs.String(), "replication slot was invalidated by PostgreSQL"); n != 1 {
		t.Errorf("lost slot logged %d times, want once", n)
	}
}

func TestHeartbeatFlags(t *testing.T) {
	for v, want := range map[string]int64{"0": 0, "1GB": 1 << 30, "512MB": 512 << 20, "512mb": 512 << 20, "2 GB": 2 << 30,
		"64kB": 64 << 10, "1TB": 1 << 40, "4096": 4096, "100B": 100} {
		if got, err := parseSize(v); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"", "GB", "1.5GB", "-1GB", "1PB", "1 G", "99999999999TB"} {
		if got, err := parseSize(v); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", v, got)
		}
	}
	cfg := testConfig(t, "postgres://x", "--heartbeat-interval", "0", "--stall-threshold", "90s", "--max-retained-wal", "2GB")
	if cfg.HeartbeatInterval != 0 || cfg.StallThreshold != 90*time.Second || cfg.MaxRetainedWAL != 2<<30 {
		t.Errorf("config = %v %v %v", cfg.HeartbeatInterval, cfg.StallThreshold, cfg.MaxRetainedWAL)
	}
	for _, args := range [][]string{{"--heartbeat-interval", "10ms"}, {"--stall-threshold", "-1s"}, {"--heartbeat-interval", "10"}, {"--max-retained-wal", "lots"}} {
		if _, _, err := parseConfig(cmdRun, args, func(string) string { return "" }); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// The connection heartbeats are written on is killed: walcast says so once,
// opens another, and heartbeats come back again.
func TestHeartbeatsSurviveALostConnection(t *testing.T) {
	pg := electionDB(t)
	app, logs := startLogged(t, cmdRun, testConfig(t, pg.URL(), "--heartbeat-interval", "100ms"))
	app.waitStreaming(t)
	eventually(t, 10*time.Second, "a heartbeat came back", func() bool { return !app.app.Status().LastHeartbeat.IsZero() })

	var killed int
	queryRow(t, pg.URL(), `SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		AND (query LIKE '%walcast_heartbeat%' OR query LIKE '%restart_lsn%')`, nil, &killed)
	if killed != 1 {
		t.Fatalf("terminated %d heartbeat connections, want 1", killed)
	}
	since := time.Now()
	eventually(t, 10*time.Second, "heartbeats come back on a new connection", func() bool {
		return app.app.Status().LastHeartbeat.After(since.Add(200 * time.Millisecond))
	})
	if st := app.app.Status(); st.Stalled != "" || !st.Streaming {
		t.Errorf("status = %+v", st)
	}
	eventually(t, 5*time.Second, "the recovery is logged", func() bool { return strings.Contains(logs.String(), "writing heartbeats again") })
	if out := logs.String(); strings.Count(out, "cannot write a heartbeat") > 1 {
		t.Errorf("heartbeat failure logged more than once:\n%s", out)
	}
}

// A standby says once that it waits, not every second, and says when it
// takes over.
func TestStandbyLogsOnceWhenWaitingAndOnceWhenTakingOver(t *testing.T) {
	pg := electionDB(t)
	active := startApp(t, testConfig(t, pg.URL()))
	active.waitStreaming(t)
	standby, logs := startLogged(t, cmdRun, testConfig(t, pg.URL()))
	eventually(t, 10*time.Second, "the standby waits", func() bool { return standby.app.Status().Waiting != "" })
	time.Sleep(2500 * time.Millisecond) // two more polls of the slot
	if n := strings.Count(logs.String(), "waiting to take over"); n != 1 {
		t.Errorf("standby logged %d times that it waits, want once", n)
	}
	active.stop(t)
	standby.waitStreaming(t)
	out := logs.String()
	if !strings.Contains(out, `msg="took over the replication slot" slot=walcast waited=`) {
		t.Errorf("no take-over line in:\n%s", out)
	}
	if n := strings.Count(out, "waiting to take over"); n != 1 {
		t.Errorf("standby logged %d times that it waits, want once", n)
	}
}
