package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// Two serve replicas behind one capture deliver the same messages with the
// same ids in the same order.
func TestServeReplicasDeliverIdenticalSequences(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	capture := startMode(t, cmdCapture, modeConfig(t, cmdCapture, "--database-url", pg.URL(), "--redis-url", rd.URL()))
	capture.waitStreaming(t)
	if code, _ := httpGet(t, "http://"+capture.addr+"/ws"); code != 404 {
		t.Errorf("capture serves /ws (HTTP %d); it should not", code)
	}
	s1 := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	s2 := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	waitReady(t, s1.addr)
	waitReady(t, s2.addr)
	c1 := dial(t, s1.addr, token(t, 1, "admin"), "")
	c2 := dial(t, s2.addr, token(t, 1, "admin"), "")

	const n = 300
	for i := 0; i < n; i += 10 {
		pg.Exec(t, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name)
			SELECT 1 + g %% 3, g, 'r' || g FROM generate_series(%d, %d) g`, i, i+9))
	}
	for i := 0; i < n; i++ {
		a, b := c1.changeRaw(t), c2.changeRaw(t)
		if !bytes.Equal(a, b) {
			t.Fatalf("message %d differs between replicas:\n%s\n%s", i, a, b)
		}
	}
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := httpGetNoFail("http://" + addr + "/readyz"); code == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, body := httpGet(t, "http://"+addr+"/readyz")
	t.Fatalf("%s not ready: %s", addr, body)
}

// Resume through Redis replays exactly the missed messages; an id older
// than the kept history gets resync_required.
func TestResumeFromRedisHistory(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	app := startApp(t, testConfig(t, pg.URL(), "--redis-url", rd.URL(), "--history", "200"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'seen')`)
	seen := c.change(t)["id"].(string)
	c.conn.CloseNow()

	for i := 0; i < 5; i++ {
		pg.Exec(t, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'missed %d')`, i))
	}
	c2 := dial(t, app.addr, token(t, 1, "admin"), "since="+seen)
	for i := 0; i < 5; i++ {
		m := c2.change(t)
		if got := m["data"].(map[string]any)["elector_name"]; got != fmt.Sprintf("missed %d", i) {
			t.Fatalf("replay %d: got %v", i, got)
		}
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'live')`)
	if got := c2.change(t)["data"].(map[string]any)["elector_name"]; got != "live" {
		t.Fatalf("after replay: got %v, want the live message with nothing between", got)
	}

	// Push the first id out of the ~200 kept (MAXLEN ~ trims whole nodes).
	for batch := 0; batch < 10; batch++ {
		pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) SELECT 1, 1, 'filler' FROM generate_series(1, 50)`)
		for i := 0; i < 50; i++ {
			c2.change(t)
		}
	}
	c3 := dial(t, app.addr, token(t, 1, "admin"), "since="+seen)
	if m := c3.next(t, 5*time.Second); m["type"] == "welcome" {
		if m = c3.next(t, 5*time.Second); m["type"] != "resync_required" {
			t.Fatalf("got %v, want resync_required", m)
		}
	}
}

// A standby capture waits while the slot is held, reports ready as a
// standby, and takes over within seconds of the holder's death.
func TestStandbyCaptureTakesOver(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	args := []string{"--database-url", pg.URL(), "--redis-url", rd.URL()}
	active := startMode(t, cmdCapture, modeConfig(t, cmdCapture, args...))
	active.waitStreaming(t)
	standby := startMode(t, cmdCapture, modeConfig(t, cmdCapture, args...))
	deadline := time.Now().Add(10 * time.Second)
	for standby.app.Status().Waiting == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := httpGet(t, "http://"+standby.addr+"/readyz"); code != 200 || !strings.Contains(body, "standby") {
		t.Errorf("standby /readyz = %d %s, want 200 standby", code, body)
	}
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	waitReady(t, serve.addr)
	c := dial(t, serve.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'before')`)
	c.change(t)
	active.stop(t)
	stopped := time.Now()
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after')`)
	if got := c.change(t)["data"].(map[string]any)["elector_name"]; got != "after" {
		t.Fatalf("got %v", got)
	}
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("standby took %v to deliver, want under 5 s", d)
	} else {
		t.Logf("standby delivered %v after the holder stopped", d.Round(time.Millisecond))
	}
}

func TestRedisConfigurationProblems(t *testing.T) {
	pg := electionDB(t)
	t.Run("refused AUTH", func(t *testing.T) {
		rd := testenv.StartRedis(t, testenv.WithRedisArgs("--requirepass", "sesame"))
		url := strings.Replace(rd.URL(), "redis://", "redis://:wrong@", 1)
		var out, errOut bytes.Buffer
		code := realMain([]string{"run", "--database-url", pg.URL(), "--redis-url", url, "--jwt-secret", "s", "--listen", "127.0.0.1:0"}, &out, &errOut, func(string) string { return "" })
		if code != 1 || !strings.Contains(errOut.String(), "refused authentication") || strings.Contains(errOut.String(), "wrong") {
			t.Errorf("exit %d, stderr %q: want 1, the reason, and no password", code, errOut.String())
		}
	})
	t.Run("key of another type", func(t *testing.T) {
		rd := testenv.StartRedis(t)
		rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
		defer rdb.Close()
		rdb.Set(context.Background(), "walcast:changes", "oops", 0)
		var out, errOut bytes.Buffer
		code := realMain([]string{"serve", "--redis-url", rd.URL(), "--jwt-secret", "s", "--listen", "127.0.0.1:0"}, &out, &errOut, func(string) string { return "" })
		if code != 1 || !strings.Contains(errOut.String(), "holds a string, not a stream") || !strings.Contains(errOut.String(), "DEL walcast:changes") {
			t.Errorf("exit %d, stderr %q", code, errOut.String())
		}
	})
}

// A Redis restart without persistence loses the stream: a client resuming
// from an id of the lost history must be told to resync, never given a
// silent gap.
func TestLostRedisHistoryMeansResync(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	app := startApp(t, testConfig(t, pg.URL(), "--redis-url", rd.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'seen')`)
	seen := c.change(t)["id"].(string)
	c.conn.CloseNow()

	// A change the resuming client never saw, stored and confirmed (so it
	// is never re-read from WAL), then lost with Redis.
	watcher := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'lost')`)
	lost, err := schema.ParsePosition(watcher.change(t)["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); app.app.Status().Confirmed <= lost.LSN; {
		if time.Now().After(deadline) {
			t.Fatalf("capture did not confirm %s", lost)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rd.Kill(t)
	rd.Start(t)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after')`)
	for { // the watcher may be told to resync first: it lived through the loss
		m := watcher.change(t)
		if m["type"] == "resync_required" {
			continue
		}
		if got := m["data"].(map[string]any)["elector_name"]; got != "after" {
			t.Fatalf("watcher got %v", got)
		}
		break
	}

	c2 := dial(t, app.addr, token(t, 1, "admin"), "since="+seen)
	for {
		m := c2.next(t, 10*time.Second)
		switch m["type"] {
		case "welcome", "dashboard_update":
			continue
		case "resync_required":
			return
		}
		t.Fatalf("got %v after lost history, want resync_required", m)
	}
}

// The holder of the slot dies (kill -9); the standby capture process takes
// over within 5 s, and nothing is lost.
func TestStandbyTakesOverFromAKilledHolder(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t, testenv.WithAOF())
	args := []string{"capture", "--database-url", pg.URL(), "--redis-url", rd.URL()}
	active := startCommand(t, testenv.FreePort(t), args...)
	active.waitReady(t)
	standby := startCommand(t, testenv.FreePort(t), args...)
	standby.waitReady(t) // a standby is ready: waiting is its job
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	waitReady(t, serve.addr)
	c := dial(t, serve.addr, token(t, 1, "admin"), "")

	active.kill9(t)
	killed := time.Now()
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after the holder died')`)
	if got := c.change(t)["data"].(map[string]any)["elector_name"]; got != "after the holder died" {
		t.Fatalf("got %v", got)
	}
	d := time.Since(killed)
	t.Logf("standby delivered %v after the holder was killed", d.Round(time.Millisecond))
	if d > 5*time.Second {
		t.Errorf("takeover took %v, want under 5 s", d)
	}
}

// /readyz turns red while Redis is down and green again after, and the
// serve replica resumes where it stopped.
func TestReadinessFollowsRedis(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t, testenv.WithAOF())
	app := startApp(t, testConfig(t, pg.URL(), "--redis-url", rd.URL()))
	app.waitStreaming(t)
	waitReady(t, app.addr)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	rd.Kill(t)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'during the outage')`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, "http://"+app.addr+"/readyz")
		if code == 503 && strings.Contains(body, "redis unreachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s while Redis is down", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rd.Start(t)
	waitReady(t, app.addr)
	if got := c.change(t)["data"].(map[string]any)["elector_name"]; got != "during the outage" {
		t.Fatalf("got %v", got)
	}
}
