package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// Serve-tier mode against a real Redis, with one and then two real
// `walcast serve` replicas for a second each (the second step starts on an
// emptied stream, as every size of `make bench-serve-tier` after the first
// does): it reports every figure, and the replicas read what was appended.
// It asserts that the mode works, not how fast.
func TestServeTierMode(t *testing.T) {
	rd := testenv.StartRedis(t)
	cfg, err := parseConfig([]string{"--mode", "serve-tier", "--serve-replicas", "1,2", "--rate", "1000", "--tx-size", "10",
		"--clients", "2", "--scope", "committee", "--committees", "10", "--duration", "1s", "--redis-url", rd.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg, t.TempDir(), "walcast-bench --mode serve-tier")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ServeTier) != 2 {
		t.Fatalf("%d rows, want 2", len(res.ServeTier))
	}
	r := res.ServeTier[1]
	if r.Replicas != 2 || len(r.ServeCPUPct) != 2 || len(r.LagAtEnd) != 2 {
		t.Errorf("row for %d replicas with %d CPU figures and %d lags, want 2 of each", r.Replicas, len(r.ServeCPUPct), len(r.LagAtEnd))
	}
	if r.Appended == 0 || r.AppendCalls == 0 || r.RedisOutPerSec <= 0 || r.RedisInPerSec <= 0 || r.WindowSec <= 0 {
		t.Errorf("appended %d in %d calls, Redis out %.0f B/s, in %.0f B/s over %.1f s: want all above 0",
			r.Appended, r.AppendCalls, r.RedisOutPerSec, r.RedisInPerSec, r.WindowSec)
	}
	if r.CatchUpSec < 0 {
		t.Errorf("the replicas had not read the %d entries within 30 s of the end (behind: %v)", r.Appended, r.LagAtEnd)
	}
	if r.ExpectedDeliveries == 0 || r.Deliveries != r.ExpectedDeliveries {
		t.Errorf("deliveries %d of %d", r.Deliveries, r.ExpectedDeliveries)
	}
	if !hasCommand(r.Commands, "xread") {
		t.Errorf("no XREAD among Redis's commands: %+v", r.Commands)
	}
	md := res.Markdown()
	if !strings.Contains(md, "| 2 | ") || !strings.Contains(md, "XREAD") {
		t.Errorf("report lacks the row or the commands:\n%s", md)
	}
}

func hasCommand(cs []CommandShare, name string) bool {
	for _, c := range cs {
		if c.Name == name && c.Calls > 0 {
			return true
		}
	}
	return false
}

func TestServeTierConfig(t *testing.T) {
	cfg, err := parseConfig([]string{"--mode", "serve-tier", "--serve-replicas", "1, 4,16"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ServeReplicas) != 3 || cfg.ServeReplicas[1] != 4 {
		t.Errorf("replicas %v", cfg.ServeReplicas)
	}
	for name, args := range map[string][]string{
		"not a number": {"--mode", "serve-tier", "--serve-replicas", "1,x"},
		"too many":     {"--mode", "serve-tier", "--serve-replicas", "65"},
		"memory bus":   {"--mode", "serve-tier", "--bus", "memory"},
		"target":       {"--mode", "serve-tier", "--target", "ws://127.0.0.1:1", "--jwt-secret", "s"},
		"flat out":     {"--mode", "serve-tier", "--rate", "0"},
		"clients":      {"--mode", "serve-tier", "--serve-replicas", "16", "--clients", "2000"},
		"no replicas":  {"--mode", "serve-tier", "--serve-from-replicas"},
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
}

func TestServeTierReport(t *testing.T) {
	rows := []ServeTierRow{
		{Replicas: 0, WindowSec: 1, AppendRate: 10_000, RedisCPUPct: 10, RedisOutPerSec: 1e3, CatchUpSec: 0},
		{Replicas: 1, WindowSec: 1, AppendRate: 10_000, RedisCPUPct: 15, RedisOutPerSec: 5e6, ServeCPUPct: []float64{8}, LagAtEnd: []int64{3}, CatchUpSec: 0.1,
			Commands: []CommandShare{{Name: "xinfo|stream", Calls: 1000, CorePct: 1}, {Name: "xread", Calls: 1000, CorePct: 2}}},
		{Replicas: 4, WindowSec: 1, AppendRate: 10_000, RedisCPUPct: 30, RedisOutPerSec: 20e6, ServeCPUPct: []float64{8, 9, 8, 10}, LagAtEnd: []int64{0, 5, 0, 0}, CatchUpSec: -1},
	}
	setTierRatios(rows)
	if rows[2].RedisCPURatio != 2 || rows[2].RedisOutRatio != 4 {
		t.Errorf("ratios %.2f, %.2f; want 2 and 4", rows[2].RedisCPURatio, rows[2].RedisOutRatio)
	}
	md := serveTierMarkdown(&Result{Mode: "serve-tier", Rate: 10_000, Clients: 4, Command: "walcast-bench --mode serve-tier", ServeTier: rows}, "today", time.Minute, false)
	for _, want := range []string{
		"| 4 | 10,000 (0) | 30.0% | 2.00× | 7.5% | 20.00 MB/s | 4.00× | 5.00 MB/s | 8.8% (10.0%) | — | 5 | not within 30 s |",
		"| 1 | 10,000 (0) | 15.0% | 1.00× | 15.0% | 5.00 MB/s | 1.00× | 5.00 MB/s | 8.0% (8.0%) | 1,000 (10.0) | 3 | 0.10 s |",
		"XINFO STREAM 1.0% (1,000 calls/s)",
		"5.0% of a core and 5.00 MB/s (500 bytes per change) at 1; 5.0% of a core and 5.00 MB/s (500 bytes per change) at 4",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
