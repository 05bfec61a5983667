package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

func TestElectionConfig(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown command":   {"--mode", "drain", "--walcast-cmd", "serve"},
		"capture live":      {"--mode", "live", "--walcast-cmd", "capture"},
		"capture memory":    {"--mode", "drain", "--bus", "memory", "--walcast-cmd", "capture"},
		"profile minimal":   {"--server", "minimal", "--profile", "x.pprof"},
		"profile target":    {"--target", "ws://127.0.0.1:1", "--jwt-secret", "s", "--database-url", "postgres://127.0.0.1/x", "--profile", "x"},
		"profile idle":      {"--mode", "idle", "--idle", "10", "--profile", "x"},
		"profile seconds 0": {"--profile", "x", "--profile-seconds", "0"},
		"profile kind":      {"--profile", "x", "--profile-kind", "heap"},
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
	if _, err := parseConfig([]string{"--mode", "drain", "--walcast-cmd", "capture", "--profile", "c.pprof"}); err != nil {
		t.Errorf("capture drain with a profile: %v", err)
	}
	steps := electionSet(false)
	groups := map[string]int{}
	for _, s := range steps {
		if _, err := parseConfig(s.args); err != nil {
			t.Errorf("step %v: %v", s.args, err)
		}
		groups[s.group]++
	}
	if groups["election"] != 5 || groups["election-baseline"] != 5 || groups["floor"] != 1 || groups["floor-baseline"] != 1 || groups["capture"] != 2 {
		t.Errorf("groups %v: want 5 election points and 1 floor point, each with its baseline, and 2 captures", groups)
	}
}

func TestElectionReport(t *testing.T) {
	rs := []*Result{
		{Label: "capture", Mode: "drain", Bus: "redis", WalcastCmd: "run", DrainRows: 1000, DrainRate: 50_000, RecvlogicalRate: 125_000, DrainRatio: 0.4, CPUPercent: 60, Command: "walcast-bench --mode drain --walcast-cmd run"},
		{Label: "capture", Mode: "drain", Bus: "redis", WalcastCmd: "capture", DrainRows: 1000, DrainRate: 75_000, RecvlogicalRate: 125_000, DrainRatio: 0.6, CPUPercent: 50, LoadAvg: 1.5, Command: "walcast-bench --mode drain --walcast-cmd capture"},
		{Label: "election", Clients: 10_000, Rate: 5, DeliveriesPerSec: 50_000, Deliveries: 600_000, ExpectedDeliveries: 600_000, CPUMicrosPerDeliv: 12, LatencyP50Ms: 150, LatencyP99Ms: 300, CPUPercent: 60, Command: "w 10000 5"},
		{Label: "election-baseline", Clients: 10_000, Rate: 5, DeliveriesPerSec: 50_000, CPUMicrosPerDeliv: 4, LatencyP50Ms: 50, LatencyP99Ms: 100, Command: "m 10000 5"},
		{Label: "election", Clients: 10_000, Rate: 10, DeliveriesPerSec: 100_000, CPUMicrosPerDeliv: 10, LatencyP50Ms: 160, LatencyP99Ms: 320, Command: "w 10000 10"},
		{Label: "election-baseline", Clients: 10_000, Rate: 10, DeliveriesPerSec: 100_000, CPUMicrosPerDeliv: 5, LatencyP50Ms: 40, LatencyP99Ms: 80, Command: "m 10000 10"},
		{Label: "floor", Clients: 100, Rate: 10, LatencyP50Ms: 3.5, LatencyP99Ms: 13, Command: "w 100 10"},
	}
	md := electionMarkdown(rs, "today", time.Minute, false)
	for _, want := range []string{
		"| 10,000 | 10 | 0 / 0 | 100,000 / 100,000 (0 / 0) | 10.00 / 5.00 | 2.00× | 160 / 40.0 ms | 4.00× | 320 / 80.0 ms | 4.00× |",
		"| 10,000 | 5 | 0 / 0 | 50,000 / 50,000 (600,000 / 600,000) | 12.00 / 4.00 | 3.00× | 150 / 50.0 ms | 3.00× | 300 / 100 ms | 3.00× | 60% |",
		"| 100 | 10 | 0 / 0 | 0 / 0 (0 / 0) | 0.00 / 0.00 | — |",
		"| walcast capture | 1,000 | 75,000 | 125,000 | 0.60 | 50% | 1.50 |",
		"    w 10000 10\n    m 10000 10\n    w 10000 5\n    m 10000 5\n",
		"### The quiet floor",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "| 10,000 | 10 |"), strings.Index(md, "| 10,000 | 5 |"); i < 0 || j < i {
		t.Errorf("10/s should come before 5/s")
	}
}

// The new modes against real servers, briefly: capture by `walcast
// capture` and a few clients at an election-like rate, each with a CPU
// profile of the walcast child. It asserts that they report, not speed.
func TestElectionModes(t *testing.T) {
	testenv.SkipIfShort(t, "PostgreSQL, Redis and walcast")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for name, args := range map[string][]string{
		"capture": {"--mode", "drain", "--rows", "3000", "--tx-size", "100", "--bus", "redis", "--walcast-cmd", "capture", "--profile-seconds", "1", "--profile-kind", "trace"},
		"live":    {"--mode", "live", "--clients", "20", "--scope", "admin", "--rate", "10", "--duration", "2s", "--bus", "redis", "--profile-seconds", "1"},
	} {
		prof := dir + "/" + name + ".pprof"
		cfg, err := parseConfig(append(args, "--profile", prof))
		if err != nil {
			t.Fatal(err)
		}
		res, err := run(ctx, cfg, t.TempDir(), "walcast-bench "+strings.Join(args, " "))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
			t.Errorf("%s: no profile written (%v)", name, err)
		}
		switch name {
		case "capture":
			if res.WalcastCmd != "capture" || res.DrainRate <= 0 || res.DrainRatio <= 0 {
				t.Errorf("capture: command %q, %.0f rows/s, ratio %.2f", res.WalcastCmd, res.DrainRate, res.DrainRatio)
			}
		case "live":
			if res.Deliveries == 0 || res.ExpectedDeliveries == 0 || res.LatencyP50Ms <= 0 || res.LatencyP99Ms <= 0 {
				t.Errorf("live: %d of %d deliveries, p50 %.2f ms, p99 %.2f ms", res.Deliveries, res.ExpectedDeliveries, res.LatencyP50Ms, res.LatencyP99Ms)
			}
		}
	}
}

// The targets table reads results back from the sets' JSON: a run that
// missed a target says so, a missing run says it was not measured.
func TestIssue12Targets(t *testing.T) {
	flat := true
	rs := []*Result{
		{Label: "fanout", Clients: 1000, LatencyP50Ms: 6, DeliveriesPerSec: 500_000},
		{Label: "fanout-baseline", Clients: 1000, LatencyP50Ms: 5, DeliveriesPerSec: 499_000},
		{Label: "election", Clients: 10000, Rate: 10, CPUMicrosPerDeliv: 4, LatencyP50Ms: 20, LatencyP99Ms: 120},
		{Label: "election", Clients: 10000, Rate: 50, CPUMicrosPerDeliv: 3},
		{Label: "capture", Mode: "drain", Bus: "redis", WalcastCmd: "capture", DrainRatio: 0.71},
		{Label: "soak", RSSFlat: &flat, RSSSpreadPct: 2},
	}
	got := map[string]goal{}
	for _, g := range issue12Targets(rs) {
		got[g.what] = g
	}
	for what, want := range map[string]struct{ known, met bool }{
		"fan-out p50 vs the minimal server, 1,000 clients, throughput ≥ minimal":  {true, true},
		"fan-out p50 vs the minimal server, 10,000 clients, throughput ≥ minimal": {false, false},
		"CPU per delivery, 10,000 clients × 10 changes/s vs 10,000 × 50/s":        {true, true},
		"p50 / p99, 10,000 clients × 10 changes/s":                                {true, false},
		"capture into Redis vs pg_recvlogical, `walcast capture`":                 {true, true},
		"capture into Redis vs pg_recvlogical, `walcast run`":                     {false, false},
		"10-minute soak: RSS spread after the first minute":                       {true, true},
	} {
		g, ok := got[what]
		if !ok {
			t.Errorf("no row %q", what)
			continue
		}
		if g.known != want.known || g.met != want.met {
			t.Errorf("%q: known %v met %v, want %v %v (%s)", what, g.known, g.met, want.known, want.met, g.measured)
		}
	}
	md := targetsMarkdown(issue12Targets(rs), []string{"a.json"})
	if !strings.Contains(md, "**missed**") || !strings.Contains(md, "not measured") {
		t.Errorf("markdown lacks a missed or unmeasured row:\n%s", md)
	}
}
