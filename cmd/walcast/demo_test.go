package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/testenv"
)

func TestDemoStreamsTheSimulatedElectionAndCleansUp(t *testing.T) {
	testenv.SkipIfShort(t, "a PostgreSQL server (the demo starts its own)")
	port := testenv.FreePort(t)
	cfg, _, err := parseConfig(cmdDemo, []string{"--listen", "127.0.0.1:" + strconv.Itoa(port), "--log-level", "warn"},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, cfg, stdout, testWriter{t}) }()

	tok, dir := waitDemoBanner(t, stdout, done, port)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data folder: %v", err)
	}
	readDemoChanges(t, ctx, port, tok, 3)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runDemo: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runDemo did not return within 10s of cancel")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data folder %s is still there (stat: %v)", dir, err)
	}
}

// waitDemoBanner waits for the banner the demo prints once walcast
// streams, and returns the admin token and the data folder it names.
func waitDemoBanner(t *testing.T, stdout *syncBuffer, done <-chan error, port int) (tok, dir string) {
	t.Helper()
	tokenRE := regexp.MustCompile(`admin:\s+http://localhost:(\d+)/#token=(\S+)`)
	dirRE := regexp.MustCompile(`data folder \(removed on exit\):\s+(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for tok == "" {
		select {
		case err := <-done:
			t.Fatalf("runDemo returned early: %v\n%s", err, stdout.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := tokenRE.FindStringSubmatch(stdout.String()); m != nil {
			if m[1] != strconv.Itoa(port) {
				t.Fatalf("banner names port %s, want %d", m[1], port)
			}
			tok = m[2]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dashboard URL within 60s:\n%s", stdout.String())
		}
	}
	m := dirRE.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no data folder in the banner:\n%s", stdout.String())
	}
	return tok, m[1]
}

// readDemoChanges connects to the demo with tok and reads n change
// messages (frames with an id).
func readDemoChanges(t *testing.T, ctx context.Context, port int, tok string, n int) {
	t.Helper()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	conn, resp, err := websocket.Dial(wctx, "ws://127.0.0.1:"+strconv.Itoa(port)+"/ws?token="+tok, nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial /ws: %v %s", err, body)
	}
	defer conn.Close(websocket.StatusNormalClosure, "")
	conn.SetReadLimit(1 << 20)
	changes := 0
	for changes < n {
		_, b, err := conn.Read(wctx)
		if err != nil {
			t.Fatalf("after %d change messages: %v", changes, err)
		}
		var m struct{ ID, Type string }
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		if m.ID != "" {
			changes++
		}
	}
}
