package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/testenv"
)

// TestWebClientAndDashboard runs the Node tests in broadcast/web/test: unit tests of
// broadcast/web/client.js against this real walcast, and the dashboard in
// headless Chromium driven by playwright-core. The Node side steers the
// scenario through a small control server (SQL, kill and restart walcast,
// tokens), so walcast stays a real process with Redis behind it and resume
// survives its restarts.
//
// Node 20+, broadcast/web/node_modules (npm ci) and Chromium come from
// scripts/install-deps.sh; without them the test fails under CI=true and is
// skipped otherwise.
func TestWebClientAndDashboard(t *testing.T) {
	waitsMostly(t)
	webDir, err := filepath.Abs("../../broadcast/web")
	if err != nil {
		t.Fatal(err)
	}
	node, chromium := webTestTools(t, webDir, true)

	rd := testenv.StartRedis(t)
	rig := startNodeRig(t, "--redis-url", rd.URL())

	shot := os.Getenv("WALCAST_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(webDir, "test-results", "dashboard.png")
	}
	files, err := filepath.Glob(filepath.Join(webDir, "test", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no broadcast/web/test/*.test.js (%v)", err)
	}
	began := time.Now()
	if err := rig.runNode(node, webDir, files, "CHROMIUM="+chromium, "WALCAST_SCREENSHOT="+shot); err != nil {
		t.Fatalf("node tests: %v", err)
	}
	t.Logf("node tests passed in %v; dashboard screenshot: %s", time.Since(began).Round(time.Millisecond), shot)
}

// nodeRig is a real walcast process on a real PostgreSQL, and the control
// server through which Node tests steer it (SQL, kill and restart walcast,
// tokens).
type nodeRig struct {
	t   *testing.T
	w   *walcastServer
	ctl *httptest.Server
}

// startNodeRig starts walcast run on a fresh election database with the
// extra flags given (e.g. --redis-url), and its control server.
func startNodeRig(t *testing.T, extra ...string) *nodeRig {
	t.Helper()
	pg := electionDB(t)
	w := &walcastServer{
		bin:  walcastBinary(t),
		addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		out:  &syncBuffer{},
	}
	w.args = append([]string{"run", "--database-url", pg.URL(), "--jwt-secret", testSecret,
		"--listen", w.addr, "--log-level", "warn"}, extra...)
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("walcast output:\n%s", w.out.String())
		}
	})
	if err := w.start(); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	ctl := httptest.NewServer(controlHandler(w, db))
	t.Cleanup(ctl.Close)
	return &nodeRig{t: t, w: w, ctl: ctl}
}

// runNode runs the Node test files in dir against the rig, with env added
// to the rig's WALCAST_URL and WALCAST_CONTROL, logging their output.
func (r *nodeRig) runNode(node, dir string, files []string, env ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append(nodeTestArgs(), files...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "WALCAST_URL=http://"+r.w.addr, "WALCAST_CONTROL="+r.ctl.URL), env...)
	cmd.WaitDelay = 5 * time.Second
	out := &lineLogger{t: r.t}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	return err
}

// nodeTestArgs runs test files one at a time (they share one walcast and
// kill it). Node 20 has WebSocket only behind a flag.
func nodeTestArgs() []string {
	return []string{"--experimental-websocket", "--test",
		"--test-concurrency=1", "--test-reporter=spec"}
}

// webTestTools finds node (and Chromium when withChromium) and checks that
// npm ci has run in broadcast/web, failing under CI=true and skipping
// otherwise when something is missing.
func webTestTools(t *testing.T, webDir string, withChromium bool) (node, chromium string) {
	t.Helper()
	testenv.SkipIfShort(t, "Node.js and Chromium")
	missing := func(what string) {
		t.Helper()
		msg := what + "; `make test` (scripts/install-deps.sh) installs it"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node (Node.js 20 or newer) is not on PATH")
	}
	outb, err := exec.Command(node, "-p", "process.versions.node.split('.')[0]").Output()
	if major, _ := strconv.Atoi(strings.TrimSpace(string(outb))); err != nil || major < 20 {
		missing(fmt.Sprintf("node is older than 20 (major %q)", strings.TrimSpace(string(outb))))
	}
	for _, dep := range []string{"playwright-core", "react", "react-test-renderer"} {
		if _, err := os.Stat(filepath.Join(webDir, "node_modules", dep, "package.json")); err != nil {
			missing("broadcast/web/node_modules has no " + dep + ": run `npm ci` in broadcast/web/")
		}
	}
	if !withChromium {
		return node, ""
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing(chromium + " not found (Debian package chromium)")
	}
	return node, chromium
}

// walcastServer is the walcast binary, which the Node tests kill, freeze
// and restart on the same address through the control server.
type walcastServer struct {
	bin  string
	args []string
	addr string
	out  *syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs walcast and waits until /readyz says it streams.
func (w *walcastServer) start() error {
	w.mu.Lock()
	if w.cmd != nil {
		w.mu.Unlock()
		return errors.New("walcast is already running")
	}
	cmd := exec.Command(w.bin, w.args...)
	cmd.Stdout, cmd.Stderr = w.out, w.out
	if err := cmd.Start(); err != nil {
		w.mu.Unlock()
		return fmt.Errorf("start walcast: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	w.cmd, w.done = cmd, done
	w.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("walcast exited during start: %v", cmd.ProcessState)
		default:
		}
		if code, _ := httpGetNoFail("http://" + w.addr + "/readyz"); code == http.StatusOK {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("walcast not ready within 30 s")
}

// kill sends SIGKILL (also to a stopped process) and reaps it.
func (w *walcastServer) kill() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return nil
	}
	if err := w.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-w.done
	w.cmd = nil
	return nil
}

func (w *walcastServer) signal(sig syscall.Signal) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return errors.New("walcast is not running")
	}
	return w.cmd.Process.Signal(sig)
}

// controlHandler is what the Node tests call to change the world:
//
//	POST /sql             run the body as SQL (several statements allowed)
//	POST /query           run the body as one SELECT; answer its rows as a JSON array
//	POST /walcast/kill    SIGKILL walcast
//	POST /walcast/start   start it again on the same address, wait until ready
//	POST /walcast/stop    SIGSTOP: connections stay open but nothing answers
//	POST /walcast/cont    SIGCONT
//	GET  /token?user=1&role=admin&committees=1,2&ttl=1h
func controlHandler(w *walcastServer, db *pgx.Conn) http.Handler {
	var dbMu sync.Mutex
	mux := http.NewServeMux()
	reply := func(rw http.ResponseWriter, err error) {
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(rw, "ok")
	}
	mux.HandleFunc("POST /sql", func(rw http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			reply(rw, err)
			return
		}
		dbMu.Lock()
		defer dbMu.Unlock()
		_, err = db.Exec(r.Context(), string(b))
		reply(rw, err)
	})
	mux.HandleFunc("POST /query", func(rw http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			reply(rw, err)
			return
		}
		dbMu.Lock()
		defer dbMu.Unlock()
		var rows string
		err = db.QueryRow(r.Context(), "SELECT coalesce(json_agg(q), '[]')::text FROM ("+string(b)+") q").Scan(&rows)
		if err != nil {
			reply(rw, err)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		io.WriteString(rw, rows)
	})
	mux.HandleFunc("POST /walcast/kill", func(rw http.ResponseWriter, r *http.Request) { reply(rw, w.kill()) })
	mux.HandleFunc("POST /walcast/start", func(rw http.ResponseWriter, r *http.Request) { reply(rw, w.start()) })
	mux.HandleFunc("POST /walcast/stop", func(rw http.ResponseWriter, r *http.Request) { reply(rw, w.signal(syscall.SIGSTOP)) })
	mux.HandleFunc("POST /walcast/cont", func(rw http.ResponseWriter, r *http.Request) { reply(rw, w.signal(syscall.SIGCONT)) })
	mux.HandleFunc("GET /token", func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		user, err := strconv.ParseInt(q.Get("user"), 10, 64)
		if err != nil {
			http.Error(rw, "user: "+err.Error(), http.StatusBadRequest)
			return
		}
		var committees []int64
		for _, s := range strings.Split(q.Get("committees"), ",") {
			if s == "" {
				continue
			}
			c, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				http.Error(rw, "committees: "+err.Error(), http.StatusBadRequest)
				return
			}
			committees = append(committees, c)
		}
		ttl := time.Hour
		if v := q.Get("ttl"); v != "" {
			if ttl, err = time.ParseDuration(v); err != nil {
				http.Error(rw, "ttl: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		tok, err := broadcast.MintToken([]byte(testSecret), user, q.Get("role"), committees, ttl)
		if err != nil {
			reply(rw, err)
			return
		}
		io.WriteString(rw, tok)
	})
	return mux
}

// lineLogger sends a child's output to t.Log a line at a time.
type lineLogger struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.t.Log(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.t.Log(string(l.buf))
		l.buf = nil
	}
}
