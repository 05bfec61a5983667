package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// demoOutput is a bytes.Buffer that runDemo writes and the test reads at
// the same time.
type demoOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *demoOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *demoOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func TestDemoStreamsTheSimulatedElectionAndCleansUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg, _, err := parseConfig(cmdDemo, []string{"--listen", "127.0.0.1:" + strconv.Itoa(port), "--log-level", "warn"},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout demoOutput
	done := make(chan error, 1)
	go func() { done <- runDemo(ctx, cfg, &stdout, testWriter{t}) }()

	// The banner appears once walcast streams.
	tokenRE := regexp.MustCompile(`admin:\s+http://localhost:(\d+)/#token=(\S+)`)
	dirRE := regexp.MustCompile(`data folder \(removed on exit\):\s+(\S+)`)
	var tok, dir string
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
	if m := dirRE.FindStringSubmatch(stdout.String()); m != nil {
		dir = m[1]
	} else {
		t.Fatalf("no data folder in the banner:\n%s", stdout.String())
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data folder: %v", err)
	}

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
	conn.SetReadLimit(1 << 20)
	changes := 0
	for changes < 3 {
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
	conn.Close(websocket.StatusNormalClosure, "")

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
