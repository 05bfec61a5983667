package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// walcastBinary returns the real binary, built once per test run the way
// releases are built (scripts/build.sh: static, stamped), with testStamp.
// TestMain starts the build in the background, so that it overlaps the
// package's first tests instead of stalling the first test that needs it.
func walcastBinary(t *testing.T) string {
	t.Helper()
	testenv.SkipIfShort(t, "the walcast binary (go build)")
	buildOnce.Do(buildBinary)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// buildBinary builds the binary into a temporary folder (removed by
// TestMain) and sets binPath or buildErr; buildOnce runs it.
func buildBinary() {
	dir, err := os.MkdirTemp("", "walcast-bin-")
	if err != nil {
		buildErr = err
		return
	}
	binPath = filepath.Join(dir, "walcast")
	cmd := exec.Command("bash", "../../scripts/build.sh", binPath)
	cmd.Env = append(os.Environ(), testStamp...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("scripts/build.sh: %v\n%s", err, out)
	}
}

// process is the walcast binary running as a child process.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
	addr string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess runs `walcast run` on the given port and waits until /ws
// accepts connections (not until replication streams).
func startProcess(t *testing.T, dbURL string, port int, extra ...string) *process {
	t.Helper()
	return startCommand(t, port, append([]string{"run", "--database-url", dbURL, "--jwt-secret", testSecret}, extra...)...)
}

// startCommand runs the walcast binary with args plus --listen on port.
func startCommand(t *testing.T, port int, args ...string) *process {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args = append(args, "--listen", addr)
	cmd := exec.Command(walcastBinary(t), args...)
	p := &process{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1), addr: addr}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("walcast output:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := httpGetNoFail(fmt.Sprintf("http://%s/healthz", addr)); code == 200 {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("walcast did not listen on %s:\n%s", addr, p.out.String())
	return nil
}

func httpGetNoFail(url string) (int, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (p *process) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := httpGetNoFail("http://" + p.addr + "/readyz"); code == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("walcast not ready within 30 s:\n%s", p.out.String())
}

// holdSlot streams from the slot without confirming anything, as another
// walcast would, so that walcast must wait for it. release ends it.
func holdSlot(t *testing.T, dbURL, slot string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, dbURL+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'walcast'"},
	})
	if err != nil {
		conn.Close(ctx)
		t.Fatalf("hold slot %s: %v", slot, err)
	}
	var once sync.Once
	release = func() { once.Do(func() { conn.Close(ctx) }) }
	t.Cleanup(release)
	return release
}

// Changes committed while walcast was stopped are delivered, exactly once,
// to a client connected when streaming resumes; changes delivered before
// the stop are not sent again.
func TestRestartDeliversChangesMadeWhileDownExactlyOnce(t *testing.T) {
	pg := electionDB(t)
	port := testenv.FreePort(t)
	p := startProcess(t, pg.URL(), port)
	p.waitReady(t)
	c1 := dial(t, p.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'before stop')`)
	if m := c1.change(t); m["data"].(map[string]any)["elector_name"] != "before stop" {
		t.Fatalf("got %v", m)
	}

	t.Logf("walcast exited %v after SIGTERM", p.sigterm(t).Round(time.Millisecond))
	if code, ok := <-c1.closed; ok && code != nil {
		t.Logf("client 1 closed: %v", code)
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'while down 1')`)
	pg.Exec(t, `UPDATE guarantee SET status = 'strong' WHERE elector_name = 'while down 1'`)
	pg.Exec(t, `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (2, 77, 1)`)

	// Keep the slot busy so the restarted walcast waits with /ws open;
	// connect; then let it stream.
	release := holdSlot(t, pg.URL(), "walcast")
	p2 := startProcess(t, pg.URL(), port)
	c2 := dial(t, p2.addr, token(t, 1, "admin"), "")
	if code, body := httpGet(t, "http://"+p2.addr+"/readyz"); code != 503 {
		t.Errorf("/readyz = %d %s while the slot is held, want 503", code, body)
	}
	release()
	p2.waitReady(t)

	want := []string{"guarantee_update/created/while down 1", "guarantee_update/updated/while down 1", "attendance_update/created/"}
	for _, w := range want {
		m := c2.change(t)
		d := m["data"].(map[string]any)
		name, _ := d["elector_name"].(string)
		got := fmt.Sprintf("%s/%s/%s", m["type"], m["action"], name)
		if got != w {
			t.Fatalf("got %s, want %s", got, w)
		}
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after restart')`)
	if m := c2.change(t); m["data"].(map[string]any)["elector_name"] != "after restart" {
		t.Fatalf("got %v, want the change after restart (no duplicates before it)", m)
	}
}
