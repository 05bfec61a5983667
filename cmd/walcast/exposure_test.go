package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/testenv"
)

// startTuned runs walcast's mode in process like startMode, with HTTP
// timeouts short enough for a test.
func startTuned(t *testing.T, mode string, cfg *Config, tm *httpTimeouts) *running {
	t.Helper()
	app := NewApp(mode, cfg, testLogger(t))
	app.httpTimeouts = tm
	return launchApp(t, app)
}

func internalAddr(t *testing.T, r *running) string {
	t.Helper()
	a, err := r.app.InternalAddr(context.Background())
	if err != nil || a == "" {
		t.Fatalf("no internal listener: %q %v", a, err)
	}
	return a
}

// healthzOnce sends one keep-alive GET /healthz on c and reads the answer.
func healthzOnce(c net.Conn, br *bufio.Reader) (int, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: walcast\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitClosed reports how long the server took to close c, failing after
// limit.
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start)
}

// 1,000 keep-alive connections against a cap of 100: 100 are served, the
// others are closed at once, and the metrics (on the internal listener,
// which the flood cannot reach) count them.
func TestHTTPConnectionsBeyondTheCapAreRefused(t *testing.T) {
	rd := testenv.StartRedis(t)
	app := startTuned(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(),
		"--max-http-connections", "100", "--internal-listen", "127.0.0.1:0"), nil)
	internal := internalAddr(t, app)

	const n = 1000
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", app.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
		// The request goes out at once, so no accepted connection waits
		// long enough for the header timeout; a refused one may already
		// be closed.
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: walcast\r\n\r\n")
	}
	served := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				mu.Lock()
				served++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if served != 100 {
		t.Errorf("%d of %d keep-alive connections served, want the cap, 100", served, n)
	}
	for sample, want := range map[string]float64{
		`walcast_http_connections_open{listener="public"}`:           100,
		`walcast_http_connections_accepted_total{listener="public"}`: 100,
		`walcast_http_connections_refused_total{listener="public"}`:  n - 100,
		`walcast_http_connections_max{listener="public"}`:            100,
	} {
		if v, ok := metric(t, internal, sample); !ok || v != want {
			t.Errorf("%s = %v (found %v), want %v", sample, v, ok, want)
		}
	}
	// Closing them gives the slots back.
	for _, c := range conns {
		c.Close()
	}
	eventually(t, 10*time.Second, "the listener counts the closed connections", func() bool {
		v, _ := metric(t, internal, `walcast_http_connections_open{listener="public"}`)
		return v == 0
	})
	if code, _ := httpGet(t, "http://"+app.addr+"/healthz"); code != 200 {
		t.Errorf("/healthz after the flood: %d", code)
	}
}

// An idle keep-alive connection and a slowloris (headers dribbled a byte
// at a time) are both closed by the server.
func TestIdleAndSlowHTTPConnectionsAreClosed(t *testing.T) {
	rd := testenv.StartRedis(t)
	tm := &httpTimeouts{readHeader: 500 * time.Millisecond, read: time.Second, write: time.Second, idle: 500 * time.Millisecond}
	app := startTuned(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(), "--internal-listen", "127.0.0.1:0"), tm)
	internal := internalAddr(t, app)

	const idle = 200
	var wg sync.WaitGroup
	closedAfter := make([]time.Duration, idle)
	for i := range idle {
		c, err := net.Dial("tcp", app.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if code, err := healthzOnce(c, br); err != nil || code != 200 {
			t.Fatalf("keep-alive request %d: %d %v", i, code, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			closedAfter[i] = waitClosed(t, c, br, 20*time.Second)
		}()
	}
	wg.Wait()
	t.Logf("%d idle keep-alive connections closed by the server %v to %v after their response (idle timeout %v)",
		idle, minDur(closedAfter), maxDur(closedAfter), tm.idle)

	// A connection that never sends anything, and one that dribbles its
	// headers: closed, and never answered.
	silent, err := net.Dial("tcp", app.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	slow, err := net.Dial("tcp", app.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	stop := make(chan struct{})
	dribbled := make(chan int, 1)
	go func() {
		req := "GET /healthz HTTP/1.1\r\nHost: walcast\r\nX-Padding: " + strings.Repeat("a", 1000) + "\r\n\r\n"
		n := 0
		defer func() { dribbled <- n }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for ; n < len(req); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := slow.Write([]byte{req[n]}); err != nil {
				return
			}
		}
	}()
	sbr := bufio.NewReader(slow)
	took := waitClosed(t, slow, sbr, 20*time.Second)
	close(stop)
	n := <-dribbled
	t.Logf("slowloris closed after %v, %d header bytes sent (header timeout %v)", took.Round(time.Millisecond), n, tm.readHeader)
	if n >= 1000 {
		t.Errorf("the slowloris sent its whole request (%d bytes) before being closed", n)
	}
	waitClosed(t, silent, bufio.NewReader(silent), 20*time.Second)
	eventually(t, 10*time.Second, "no connection left open on the public listener", func() bool {
		v, _ := metric(t, internal, `walcast_http_connections_open{listener="public"}`)
		return v == 0
	})
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m.Round(time.Millisecond)
}

func maxDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}

// net/http's read and write deadlines stay on a hijacked connection: a
// WebSocket must outlive them, reading and writing.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	rd := testenv.StartRedis(t)
	tm := &httpTimeouts{readHeader: 200 * time.Millisecond, read: 300 * time.Millisecond, write: 300 * time.Millisecond, idle: 200 * time.Millisecond}
	app := startTuned(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()), tm)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	// Waiting past the deadlines is what this test is about.
	time.Sleep(4 * tm.write)
	for i := range 3 {
		if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatalf("write after the HTTP timeouts passed: %v", err)
		}
		for {
			m := c.next(t, 5*time.Second)
			if m["type"] == "pong" {
				break
			}
		}
		if i < 2 {
			time.Sleep(tm.read)
		}
	}
}

// --trusted-proxies: behind a listed proxy, X-Forwarded-For names the
// client and IPv6 clients are grouped by /64; from any other peer the
// header is ignored.
func TestConnectRateUsesForwardedForOnlyFromTrustedProxies(t *testing.T) {
	rd := testenv.StartRedis(t)
	behind := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(), "--connect-rate", "0.5", "--trusted-proxies", "127.0.0.1/32, ::1"))
	direct := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(), "--connect-rate", "0.5", "--trusted-proxies", "10.0.0.0/8"))
	// A /ws request without a token: 401 once past the limiter, 429 when
	// limited. --connect-rate 0.5 gives a burst of one.
	get := func(addr, xff string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/ws", nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	steps := []struct {
		xff  string
		want int
		why  string
	}{
		{"2001:db8:1:2::1", 401, "first address of a /64"},
		{"2001:db8:1:2:ffff:ffff:ffff:fffe", 429, "another address in the same /64"},
		{"2001:db8:1:3::1", 401, "the next /64"},
		{"203.0.113.9, 2001:db8:1:2::7", 429, "a forged entry left of the proxy's"},
		{"198.51.100.7", 401, "an IPv4 client"},
		{"::ffff:198.51.100.7", 429, "the same client, IPv4-mapped"},
		{"198.51.100.8, 127.0.0.1", 401, "a chain through a second trusted proxy"},
	}
	for _, s := range steps {
		if c := get(behind.addr, s.xff); c != s.want {
			t.Errorf("behind a trusted proxy, %s (X-Forwarded-For: %s): %d, want %d", s.why, s.xff, c, s.want)
		}
	}
	if c := get(direct.addr, "192.0.2.1"); c != 401 {
		t.Fatalf("first request from an untrusted peer: %d", c)
	}
	if c := get(direct.addr, "192.0.2.2"); c != 429 {
		t.Errorf("untrusted peer rotating X-Forwarded-For: %d, want 429 (the header is ignored)", c)
	}
}

// --internal-listen takes metrics, pprof and detailed readiness off the
// public address; the public one keeps /healthz and a /readyz without
// detail.
func TestInternalListenerKeepsOperatorsEndpointsOffThePublicOne(t *testing.T) {
	rd := testenv.StartRedis(t)
	app := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(), "--internal-listen", "127.0.0.1:0"))
	internal := internalAddr(t, app)
	for _, c := range []struct {
		addr, path string
		want       int
	}{
		{app.addr, "/healthz", 200},
		{app.addr, "/readyz", 200},
		{app.addr, "/metrics", 404},
		{app.addr, "/debug/pprof/", 404},
		{app.addr, "/client.js", 200},
		{internal, "/healthz", 200},
		{internal, "/readyz", 200},
		{internal, "/metrics", 200},
		{internal, "/debug/pprof/", 200},
		{internal, "/debug/pprof/goroutine?debug=1", 200},
		{internal, "/debug/pprof/cmdline", 404},
		{internal, "/ws", 404},
	} {
		if code, _ := httpGet(t, "http://"+c.addr+c.path); code != c.want {
			t.Errorf("GET %s on %s: %d, want %d", c.path, map[bool]string{true: "internal", false: "public"}[c.addr == internal], code, c.want)
		}
	}
	if _, body := httpGet(t, "http://"+internal+"/metrics"); !strings.Contains(body, "walcast_clients") || !strings.Contains(body, `walcast_http_connections_open{listener="public"}`) {
		t.Errorf("internal /metrics lacks the server's metrics")
	}
}

// The public /readyz says what is wrong, never the raw error (which names
// the database user, host and database); the internal one has the detail,
// with the password masked.
func TestReadinessDetailOnlyOnTheInternalListener(t *testing.T) {
	const password = "Rdy-S3cret-pw"
	port := testenv.FreePort(t) // nothing listens there
	dbURL := fmt.Sprintf("postgres://election_owner:%s@127.0.0.1:%d/election_db", password, port)
	for _, internalListen := range []bool{false, true} {
		t.Run(fmt.Sprintf("internal=%v", internalListen), func(t *testing.T) {
			var extra []string
			if internalListen {
				extra = append(extra, "--internal-listen", "127.0.0.1:0")
			}
			app := startApp(t, testConfig(t, dbURL, extra...))
			var body string
			eventually(t, 15*time.Second, "/readyz reports the database", func() bool {
				_, body = httpGet(t, "http://"+app.addr+"/readyz")
				return strings.Contains(body, "not streaming")
			})
			for _, leak := range []string{"election_owner", "election_db", "127.0.0.1", password, "connect"} {
				if strings.Contains(body, leak) {
					t.Errorf("public /readyz shows %q: %s", leak, body)
				}
			}
			if !internalListen {
				return
			}
			_, detail := httpGet(t, "http://"+internalAddr(t, app)+"/readyz")
			if !strings.Contains(detail, "not streaming: ") || !strings.Contains(detail, "election_owner") {
				t.Errorf("internal /readyz lacks the detail: %s", detail)
			}
			if strings.Contains(detail, password) {
				t.Errorf("internal /readyz shows the password: %s", detail)
			}
		})
	}
}
