package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

const testSecret = "test-secret-not-for-production"

// electionDB starts a throwaway PostgreSQL with the election schema and
// three committees and two candidates.
func electionDB(tb testing.TB, opts ...testenv.PGOption) *testenv.Postgres {
	tb.Helper()
	pg := testenv.StartPostgres(tb, opts...)
	pg.Exec(tb, schema.SQL)
	pg.Exec(tb, `INSERT INTO committee (id, code, name, electors_count) VALUES
		(1, 'C1', 'North', 100), (2, 'C2', 'South', 200), (3, 'C3', 'East', 300)`)
	pg.Exec(tb, `INSERT INTO candidate (id, number, name) VALUES (1, 1, 'Alice'), (2, 2, 'Bob')`)
	return pg
}

// testConfig is a `walcast run` configuration on the database at dbURL
// (see modeConfig).
func testConfig(tb testing.TB, dbURL string, extra ...string) *Config {
	tb.Helper()
	return modeConfig(tb, cmdRun, append([]string{"--database-url", dbURL}, extra...)...)
}

// running is a walcast started in process.
type running struct {
	app    *App
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startApp runs `walcast run` in process and waits until it listens. It
// does not wait for replication: see waitStreaming.
func startApp(tb testing.TB, cfg *Config) *running {
	tb.Helper()
	return startMode(tb, cmdRun, cfg)
}

// modeConfig parses a configuration of capture, serve or run for tests: a
// free port, the test secret (but for capture), and args.
func modeConfig(tb testing.TB, mode string, args ...string) *Config {
	tb.Helper()
	args = append([]string{"--listen", "127.0.0.1:0"}, args...)
	if mode != cmdCapture {
		args = append(args, "--jwt-secret", testSecret)
	}
	cfg, _, err := parseConfig(mode, args, func(string) string { return "" })
	if err != nil {
		tb.Fatalf("parse config: %v", err)
	}
	return cfg
}

// testLogger logs through tb, but for benchmarks, whose logs Go always
// prints: they log nothing.
func testLogger(tb testing.TB) *slog.Logger {
	if _, bench := tb.(*testing.B); bench {
		return discardLogger()
	}
	return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startMode runs walcast's mode (run, capture or serve) in process and
// waits until it listens.
func startMode(tb testing.TB, mode string, cfg *Config) *running {
	tb.Helper()
	return launchApp(tb, NewApp(mode, cfg, testLogger(tb)))
}

// launchApp runs app in process and waits until it listens; the test's
// cleanup stops it.
func launchApp(tb testing.TB, app *App) *running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{app: app, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- app.Run(ctx) }()
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	addr, err := app.Addr(actx)
	if err != nil {
		cancel()
		tb.Fatalf("walcast did not start listening: %v (run returned %v)", err, <-r.done)
	}
	r.addr = addr
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// stop shuts walcast down as SIGTERM would and waits for it.
func (r *running) stop(tb testing.TB) error {
	tb.Helper()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(15 * time.Second):
		tb.Fatalf("walcast did not stop within 15 s")
	}
	return nil
}

// waitStreaming waits until /readyz reports ready.
func (r *running) waitStreaming(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r.app.Status().Streaming {
			return
		}
		select {
		case err := <-r.done:
			tb.Fatalf("walcast exited before streaming: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	tb.Fatalf("walcast not streaming after 30 s: %+v", r.app.Status())
}

// testWriter writes walcast's log into the test's.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// token mints an access token signed with the test secret, valid an hour.
func token(tb testing.TB, user int64, role string, committees ...int64) string {
	tb.Helper()
	tok, err := broadcast.MintToken([]byte(testSecret), user, role, committees, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// wsClient is a real WebSocket client reading frames in the background.
type wsClient struct {
	conn   *websocket.Conn
	frames chan []byte
	closed chan error
}

func dial(t *testing.T, addr, tok, query string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := fmt.Sprintf("ws://%s/ws?token=%s", addr, tok)
	if query != "" {
		u += "&" + query
	}
	conn, resp, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = fmt.Sprintf(" (HTTP %d: %s)", resp.StatusCode, b)
		}
		t.Fatalf("dial %s: %v%s", addr, err, body)
	}
	conn.SetReadLimit(64 << 20)
	c := &wsClient{conn: conn, frames: make(chan []byte, 1<<17), closed: make(chan error, 1)}
	first := make(chan struct{})
	go func() {
		defer close(c.frames)
		for n := 0; ; n++ {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.closed <- err
				if n == 0 {
					close(first)
				}
				return
			}
			c.frames <- b
			if n == 0 {
				close(first)
			}
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	// The first frame (welcome) is sent once the connection is registered:
	// changes committed after dial returns reach it.
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatalf("no welcome from %s within 10 s", addr)
	}
	return c
}

// next returns the next frame, failing after timeout.
func (c *wsClient) next(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case b, ok := <-c.frames:
		if !ok {
			t.Fatalf("connection closed: %v", <-c.closed)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame is not JSON: %v: %s", err, b)
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no frame within %v", timeout)
	}
	return nil
}

// change returns the next row-change message, skipping control frames.
func (c *wsClient) change(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.changeRaw(t), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// changeRaw returns the next row-change frame as sent.
func (c *wsClient) changeRaw(t *testing.T) []byte {
	t.Helper()
	silence := func() <-chan time.Time { return time.After(10 * time.Second) }
	return c.await(t, silence, "change within 10s", func(b []byte) bool {
		var ctl struct{ Type string }
		if err := json.Unmarshal(b, &ctl); err != nil {
			t.Fatalf("frame is not JSON: %v: %.200s", err, b)
		}
		switch ctl.Type {
		case "welcome", "pong", "subscribed", "auth_ok", "dashboard_update", "presence_state", "presence_diff", "typing":
			return false
		}
		return true
	})
}

// await returns the first frame that match accepts, skipping the others.
// It fails when the connection closes, or with "no "+what when timeout's
// channel fires: a fresh timer each call limits the silence between
// frames, one shared timer the whole wait.
func (c *wsClient) await(t *testing.T, timeout func() <-chan time.Time, what string, match func([]byte) bool) []byte {
	t.Helper()
	for {
		select {
		case b, open := <-c.frames:
			if !open {
				t.Fatalf("connection closed: %v", <-c.closed)
			}
			if match(b) {
				return b
			}
		case <-timeout():
			t.Fatalf("no %s", what)
		}
	}
}

// quiet asserts that no change arrives within d.
func (c *wsClient) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case b, ok := <-c.frames:
			if !ok {
				return
			}
			if strings.Contains(string(b), `"type":"welcome"`) || strings.Contains(string(b), `"type":"dashboard_update"`) {
				continue
			}
			t.Fatalf("unexpected frame: %s", b)
		case <-deadline:
			return
		}
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		go buildOnce.Do(buildBinary)
	}
	code := m.Run()
	// The binary lives as long as the test process; Do waits for a build
	// still under way (a run of tests that never needed it).
	buildOnce.Do(func() {})
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitsMostly marks a long test that spends its time waiting on servers
// (failover timeouts, restarts, a browser) rather than computing. Such
// tests run in parallel with one another, after the package's other tests
// and GOMAXPROCS at a time, so that this package, the longest of `make
// test`, stays well inside its timeout as it grows.
func waitsMostly(t *testing.T) { t.Parallel() }
