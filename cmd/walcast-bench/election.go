package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The election set (make bench-election) measures what issue 12 calls
// the election regime: thousands of clients, each receiving every change
// at a few changes a second, next to the minimal broadcast server at the
// same points in the same run; the quiet floor (100 clients, 10
// changes/s, Redis bus); and capture into Redis by `walcast capture`
// (split mode) as well as by `walcast run`, each against pg_recvlogical
// on the same WAL.

// electionSet is the election set's steps (under 4 minutes on 2 cores;
// make bench runs it after the standard set and the serve tier).
func electionSet(quick bool) []step {
	rows, dur := "300000", "12s"
	sizes, floor := []int{10_000, 19_000}, 100
	if quick {
		rows, dur = "5000", "2s"
		sizes, floor = []int{50}, 20
	}
	var s []step
	for _, c := range []string{"run", "capture"} {
		s = append(s, step{"capture", []string{"--mode", "drain", "--rows", rows, "--tx-size", "100", "--writers", "2", "--bus", "redis", "--walcast-cmd", c}})
	}
	pair := func(group string, n int, rate string) {
		base := []string{"--mode", "live", "--clients", strconv.Itoa(n), "--scope", "admin", "--rate", rate, "--tx-size", "1", "--duration", dur}
		s = append(s, step{group, append(append([]string{}, base...), "--bus", "redis")})
		s = append(s, step{group + "-baseline", append(append([]string{}, base...), "--server", "minimal")})
	}
	for i, n := range sizes {
		rates := []string{"10", "5"}
		if i == 0 && !quick {
			// 50/s: the busy point that CPU per delivery at 10/s is
			// compared with (flat in the per-client rate).
			rates = []string{"50", "10", "5"}
		}
		for _, r := range rates {
			pair("election", n, r)
		}
	}
	pair("floor", floor, "10")
	return s
}

// livePoint is one load point measured on walcast and on the minimal server.
type livePoint struct {
	clients int
	rate    float64
	walcast *Result
	minimal *Result
}

// pairPoints matches each group result with its -baseline at the same
// clients and rate, in clients-then-rate-descending order.
func pairPoints(rs []*Result, group string) []livePoint {
	type key struct {
		n int
		r float64
	}
	m := map[key]*livePoint{}
	var keys []key
	for _, x := range rs {
		if x.Label != group && x.Label != group+"-baseline" {
			continue
		}
		k := key{x.Clients, x.Rate}
		p := m[k]
		if p == nil {
			p = &livePoint{clients: x.Clients, rate: x.Rate}
			m[k] = p
			keys = append(keys, k)
		}
		if x.Label == group {
			p.walcast = x
		} else {
			p.minimal = x
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].n != keys[j].n {
			return keys[i].n < keys[j].n
		}
		return keys[i].r > keys[j].r
	})
	var out []livePoint
	for _, k := range keys {
		if p := m[k]; p.walcast != nil {
			if p.minimal == nil {
				p.minimal = &Result{}
			}
			out = append(out, *p)
		}
	}
	return out
}

// timesOf is a / b as "1.23×", or "—" without a baseline.
func timesOf(a, b float64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// liveTable renders load points beside the minimal server, each figure
// with its ratio to the baseline.
func liveTable(b *strings.Builder, pts []livePoint) {
	fmt.Fprintf(b, "| clients | changes/s asked | achieved walcast / minimal | deliveries/s walcast / minimal (received / expected) | µs CPU per delivery walcast / minimal | ratio | p50 walcast / minimal | ratio | p99 walcast / minimal | ratio | walcast CPU | load (1 min) |\n")
	fmt.Fprintf(b, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range pts {
		w, m := p.walcast, p.minimal
		fmt.Fprintf(b, "| %s | %s | %s / %s | %s / %s (%s / %s) | %.2f / %.2f | %s | %s / %s ms | %s | %s / %s ms | %s | %.0f%% | %.2f / %.2f |\n",
			num(float64(p.clients)), num(p.rate), num(w.WriteRate), num(m.WriteRate), num(w.DeliveriesPerSec), num(m.DeliveriesPerSec), num(float64(w.Deliveries)), num(float64(w.ExpectedDeliveries)),
			w.CPUMicrosPerDeliv, m.CPUMicrosPerDeliv, timesOf(w.CPUMicrosPerDeliv, m.CPUMicrosPerDeliv),
			ms(w.LatencyP50Ms), ms(m.LatencyP50Ms), timesOf(w.LatencyP50Ms, m.LatencyP50Ms),
			ms(w.LatencyP99Ms), ms(m.LatencyP99Ms), timesOf(w.LatencyP99Ms, m.LatencyP99Ms),
			w.CPUPercent, w.LoadAvg, m.LoadAvg)
	}
	b.WriteString("\n")
	for _, p := range pts {
		fmt.Fprintf(b, "    %s\n", p.walcast.Command)
		if p.minimal.Command != "" {
			fmt.Fprintf(b, "    %s\n", p.minimal.Command)
		}
	}
	b.WriteString("\n")
}

// electionMarkdown renders the election set's section of docs/benchmarks.md.
func electionMarkdown(rs []*Result, machine string, took time.Duration, quick bool) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## The election regime, the quiet floor and capture by `walcast capture` (`make bench-election`)\n\n")
	if quick {
		p("**A `--quick` run: too small to be a measurement; it only shows the tool works.**\n\n")
	}
	p("Measured %s; the whole set took %s. Every figure is beside its baseline from the same run; the load column is the "+
		"machine's 1-minute load average at the end of each run (other work on the machine shows there). "+
		"`walcast-bench` is `go run ./cmd/walcast-bench`.\n\n", machine, took.Round(time.Second))
	if pts := pairPoints(rs, "election"); len(pts) > 0 {
		p("### The election regime\n\n")
		p("Thousands of clients with admin tokens, so every change reaches every client, at a few changes a second; Redis bus. " +
			"Achieved is changes written (walcast) or published (the minimal server) per second of the writing time: a baseline that did not reach the asked rate is not a fair comparison at that point. " +
			"CPU per delivery is walcast's CPU time (capture included) over the frames the clients received; the minimal server's " +
			"has no capture. Latency is from just before the INSERT (the minimal server: just before it encodes) to receipt.\n\n")
		liveTable(&b, pts)
	}
	if pts := pairPoints(rs, "floor"); len(pts) > 0 {
		p("### The quiet floor\n\n100 clients with admin tokens, 10 changes/s, one row per transaction, Redis bus: the latency of a quiet system.\n\n")
		liveTable(&b, pts)
	}
	var caps []*Result
	for _, x := range rs {
		if x.Label == "capture" {
			caps = append(caps, x)
		}
	}
	if len(caps) > 0 {
		p("### Capture into Redis: `walcast run` and `walcast capture`\n\n")
		p("As in the standard set's capture table: the backlog is written first, then walcast (the command in the first column, " +
			"Redis bus) drains its slot and `pg_recvlogical` a second slot with the same WAL.\n\n")
		p("| walcast command | rows | walcast rows/s | pg_recvlogical rows/s | walcast / pg_recvlogical | walcast CPU | load (1 min) |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range caps {
			p("| %s | %s | %s | %s | %.2f | %.0f%% | %.2f |\n", cmdName(c.WalcastCmd), num(float64(c.DrainRows)), num(c.DrainRate), num(c.RecvlogicalRate), c.DrainRatio, c.CPUPercent, c.LoadAvg)
		}
		p("\n")
		for _, c := range caps {
			p("    %s\n", c.Command)
		}
		p("\n")
	}
	return b.String()
}

// cmdName is the walcast command of a drain run ("run" when not recorded).
func cmdName(c string) string {
	if c == "" {
		c = "run"
	}
	return "walcast " + c
}
