package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// report groups a suite's results for the generated docs section.
type report struct {
	capture  []*Result
	xadd     *Result
	latency  []*Result
	fanout   map[int]*Result // by clients
	baseline map[int]*Result
	idle     *Result
}

func buildReport(rs []*Result) *report {
	r := &report{fanout: map[int]*Result{}, baseline: map[int]*Result{}}
	for _, x := range rs {
		switch x.Label {
		case "capture":
			r.capture = append(r.capture, x)
		case "xadd":
			r.xadd = x
		case "latency":
			r.latency = append(r.latency, x)
		case "fanout":
			r.fanout[x.Clients] = x
		case "fanout-baseline":
			r.baseline[x.Clients] = x
		case "idle":
			r.idle = x
		}
	}
	sort.Slice(r.latency, func(i, j int) bool { return r.latency[i].Rate < r.latency[j].Rate })
	return r
}

func (r *report) latencyPoints() []latPoint {
	var pts []latPoint
	for _, x := range r.latency {
		pts = append(pts, latPoint{Load: x.Rate, P50: x.LatencyP50Ms, P99: x.LatencyP99Ms})
	}
	return pts
}

func (r *report) fanoutSizes() []int {
	var n []int
	for k := range r.fanout {
		n = append(n, k)
	}
	sort.Ints(n)
	return n
}

// target is one line of the targets table.
type target struct {
	what, want, got string
	met             bool
	known           bool
}

func (r *report) targets() []target {
	var t []target
	add := func(what, want, got string, met bool) { t = append(t, target{what, want, got, met, true}) }
	for _, c := range r.capture {
		switch {
		case c.Bus == "redis" && c.RedisFsync == "":
			add("capture into Redis vs pg_recvlogical on the same WAL ("+cmdName(c.WalcastCmd)+")", "≥ 0.70", fmt.Sprintf("%.2f (%s vs %s rows/s)", c.DrainRatio, num(c.DrainRate), num(c.RecvlogicalRate)), c.DrainRatio >= 0.7)
		case c.Bus == "redis" && c.RedisFsync == "always":
			add("capture into Redis with appendfsync always", "≥ 60,000 rows/s", num(c.DrainRate)+" rows/s", c.DrainRate >= 60_000)
		}
	}
	for _, l := range r.latency {
		if l.Rate == 10_000 {
			add("latency at 10,000 changes/s, 1,000 committee clients: p50", "≤ 5 ms", ms(l.LatencyP50Ms)+" ms", l.LatencyP50Ms <= 5)
			add("latency at 10,000 changes/s, 1,000 committee clients: p99", "≤ 25 ms", ms(l.LatencyP99Ms)+" ms", l.LatencyP99Ms <= 25)
		}
	}
	best := 0.0
	for _, n := range r.fanoutSizes() {
		best = max(best, r.fanout[n].DeliveriesPerSec)
	}
	if len(r.fanout) > 0 {
		add("fan-out deliveries/s from one process (best size)", "≥ 500,000", num(best), best >= 500_000)
	}
	for _, n := range r.fanoutSizes() {
		f, b := r.fanout[n], r.baseline[n]
		if b == nil || b.DeliveriesPerSec == 0 {
			continue
		}
		ratio := f.DeliveriesPerSec / b.DeliveriesPerSec
		add(fmt.Sprintf("fan-out to %s clients vs the minimal server", num(float64(n))), "≥ 0.80", fmt.Sprintf("%.2f (%s vs %s/s)", ratio, num(f.DeliveriesPerSec), num(b.DeliveriesPerSec)), ratio >= 0.8)
	}
	if sizes := r.fanoutSizes(); len(sizes) >= 2 {
		lo, hi := r.fanout[sizes[0]], r.fanout[sizes[len(sizes)-1]]
		if lo.CPUMicrosPerDeliv > 0 {
			g := hi.CPUMicrosPerDeliv / lo.CPUMicrosPerDeliv
			// "Does not grow": within 25% is read as flat, given the noise.
			add(fmt.Sprintf("CPU per delivery at %s vs %s clients", num(float64(sizes[len(sizes)-1])), num(float64(sizes[0]))), "flat (≤ 1.25×)",
				fmt.Sprintf("%.2f µs vs %.2f µs (%.2f×)", hi.CPUMicrosPerDeliv, lo.CPUMicrosPerDeliv, g), g <= 1.25)
		}
	}
	if r.idle != nil {
		add(fmt.Sprintf("RSS per idle connection at %s connections", num(float64(r.idle.IdleConns))), "≤ 16 KiB", fmt.Sprintf("%.1f KiB", r.idle.BytesPerConn/1024), r.idle.BytesPerConn <= 16*1024)
	}
	return t
}

// splitNote marks a capture row measured on `walcast capture`.
func splitNote(cmd string) string {
	if cmd == "capture" {
		return " (walcast capture, split mode)"
	}
	return ""
}

func yes(b bool) string {
	if b {
		return "met"
	}
	return "**missed**"
}

// markdown renders the generated section of docs/benchmarks.md.
func (r *report) markdown(machine string, took time.Duration, svg string, quick bool) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## The standard set (`make bench`)\n\n")
	if quick {
		p("**A `--quick` run: too small to be a measurement; it only shows the tool works.**\n\n")
	}
	p("Measured %s; the whole set took %s. PostgreSQL, Redis, walcast, the writer and every client share the machine; "+
		"the machine is shared with other work too, so compare the ratios within one run rather than absolute figures across runs. "+
		"Each figure's command is under its table (`walcast-bench` is `go run ./cmd/walcast-bench`); `make bench` runs them all.\n\n",
		machine, took.Round(time.Second))

	p("### Targets\n\n| target | wanted | measured | |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		p("| %s | %s | %s | %s |\n", t.what, t.want, t.got, yes(t.met))
	}
	p("\n")

	if len(r.capture) > 0 {
		p("### Capture throughput on a backlog\n\n")
		p("walcast's slot and a second slot are created, then the writer commits the rows (100 per transaction); then walcast starts " +
			"and its `walcast_changes_total` is timed from the first change to the last, and `pg_recvlogical` drains the second slot " +
			"(same WAL, pgoutput, to /dev/null, program start included).\n\n")
		p("| bus | rows | walcast rows/s | pg_recvlogical rows/s | walcast / pg_recvlogical | walcast CPU | walcast peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range r.capture {
			p("| %s%s%s | %s | %s | %s | %.2f | %.0f%% | %s |\n", c.Bus, fsyncNote(c.RedisFsync), splitNote(c.WalcastCmd), num(float64(c.DrainRows)), num(c.DrainRate), num(c.RecvlogicalRate), c.DrainRatio, c.CPUPercent, mib(c.PeakRSS))
		}
		p("\n")
		for _, c := range r.capture {
			p("    %s\n", c.Command)
		}
		p("\n")
	}
	if r.xadd != nil {
		p("### Redis baseline: pipelined XADD\n\nOne go-redis client, walcast-sized messages (%d-byte payload), `MAXLEN ~ 100000`, for 2 s each.\n\n", r.xadd.RowSize)
		p("| XADDs per round trip | appends/s, no fsync | appends/s, appendfsync always |\n|---:|---:|---:|\n")
		rates := map[string]map[int]float64{"no": {}, "always": {}}
		for _, x := range r.xadd.XAdd {
			rates[x.Fsync][x.Batch] = x.Rate
		}
		for _, n := range []int{1, 10, 100} {
			p("| %d | %s | %s |\n", n, num(rates["no"][n]), num(rates["always"][n]))
		}
		p("\n    %s\n\n", r.xadd.Command)
	}
	if len(r.latency) > 0 {
		p("### Commit-to-client latency against load\n\n")
		p("1,000 clients, client i a supervisor of committee i %% 100 + 1; the writer spreads rows over the 100 committees, 10 rows per " +
			"transaction, and puts its clock (unix ns, taken just before it sends the INSERT) at the start of `notes`; each client records " +
			"its clock at receipt minus that. Bus: Redis.\n\n")
		if svg != "" {
			p("![p50 and p99 latency against load](%s)\n\n", svg)
		}
		p("| changes/s asked | achieved | deliveries/s | p50 | p95 | p99 | max | received / expected | walcast CPU | walcast peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, l := range r.latency {
			p("| %s | %s | %s | %s ms | %s ms | %s ms | %s ms | %s / %s | %.0f%% | %s |\n", num(l.Rate), num(l.WriteRate), num(l.DeliveriesPerSec),
				ms(l.LatencyP50Ms), ms(l.LatencyP95Ms), ms(l.LatencyP99Ms), ms(l.LatencyMaxMs), num(float64(l.Deliveries)), num(float64(l.ExpectedDeliveries)), l.CPUPercent, mib(l.PeakRSS))
		}
		p("\n")
		for _, l := range r.latency {
			p("    %s\n", l.Command)
		}
		p("\n")
	}
	if len(r.fanout) > 0 {
		p("### Fan-out against the minimal broadcast server\n\n")
		p("Every client has an admin token, so every change goes to every client; the rate is set so that 500,000 deliveries/s are asked " +
			"(clients × changes/s). The minimal server (`--server minimal`, built into walcast-bench and run as a child) has no database, " +
			"bus, auth or scoping: it encodes each message once as a whole WebSocket frame, queues it to every connection, and each " +
			"connection's goroutine writes what is queued with one writev. walcast's CPU includes capture; the minimal server's does not.\n\n")
		p("| clients | changes/s | walcast deliveries/s | minimal deliveries/s | walcast / minimal | walcast CPU | µs CPU per delivery (walcast / minimal) | walcast p50 / p99 | minimal p50 / p99 | walcast peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range r.fanoutSizes() {
			f, bl := r.fanout[n], r.baseline[n]
			if bl == nil {
				bl = &Result{}
			}
			ratio := 0.0
			if bl.DeliveriesPerSec > 0 {
				ratio = f.DeliveriesPerSec / bl.DeliveriesPerSec
			}
			p("| %s | %s | %s | %s | %.2f | %.0f%% | %.2f / %.2f | %s / %s ms | %s / %s ms | %s |\n", num(float64(n)), num(f.Rate), num(f.DeliveriesPerSec), num(bl.DeliveriesPerSec), ratio,
				f.CPUPercent, f.CPUMicrosPerDeliv, bl.CPUMicrosPerDeliv, ms(f.LatencyP50Ms), ms(f.LatencyP99Ms), ms(bl.LatencyP50Ms), ms(bl.LatencyP99Ms), mib(f.PeakRSS))
		}
		p("\n")
		for _, n := range r.fanoutSizes() {
			p("    %s\n", r.fanout[n].Command)
			if bl := r.baseline[n]; bl != nil {
				p("    %s\n", bl.Command)
			}
		}
		p("\n")
	}
	if r.idle != nil {
		p("### Memory per idle connection\n\n")
		p("walcast's VmRSS once it has settled (three samples 500 ms apart within 0.5%%), before and after opening the connections; " +
			"the clients answer pings and send nothing.\n\n")
		p("| connections | RSS before | RSS after | per connection | connects/s |\n|---:|---:|---:|---:|---:|\n")
		p("| %s | %s | %s | %.1f KiB | %s |\n\n", num(float64(r.idle.IdleConns)), mib(r.idle.RSSBefore), mib(r.idle.RSSAfter), r.idle.BytesPerConn/1024, num(r.idle.ConnectPerSec))
		p("    %s\n\n", r.idle.Command)
	}
	p("The JSON of every run is written by `walcast-bench suite --json FILE`.\n")
	return b.String()
}

// soakMarkdown renders the soak's section.
func soakMarkdown(r *Result, machine string, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Soak (`make soak`)\n\nMeasured %s; took %s.\n\n    %s\n\n", machine, took.Round(time.Second), r.Command)
	flat := "no data"
	if r.RSSFlat != nil {
		flat = "no: **missed**"
		if *r.RSSFlat {
			flat = "yes: met"
		}
	}
	fmt.Fprintf(&b, "| what | value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| load | %s changes/s asked, %s achieved, %s deliveries/s |\n", num(r.Rate), num(r.WriteRate), num(r.DeliveriesPerSec))
	fmt.Fprintf(&b, "| latency p50 / p99 / max | %s / %s / %s ms |\n", ms(r.LatencyP50Ms), ms(r.LatencyP99Ms), ms(r.LatencyMaxMs))
	if len(r.RSSSamples) > 0 {
		fmt.Fprintf(&b, "| RSS samples every 10 s | %d, from %s to %s |\n", len(r.RSSSamples), mib(minRSS(r.RSSSamples)), mib(maxRSS(r.RSSSamples)))
	}
	fmt.Fprintf(&b, "| RSS spread after the first minute | %.1f%% |\n| RSS flat within 5%% (target) | %s |\n", r.RSSSpreadPct, flat)
	fmt.Fprintf(&b, "| walcast CPU | %.0f%% of one core |\n\n", r.CPUPercent)
	if len(r.RSSSamples) > 0 {
		b.WriteString("RSS (MiB) by time (s): ")
		var xs []string
		for _, s := range r.RSSSamples {
			xs = append(xs, fmt.Sprintf("%.0f: %.1f", s.Sec, float64(s.RSS)/(1<<20)))
		}
		b.WriteString(strings.Join(xs, ", ") + ".\n")
	}
	b.WriteString(runtimeMemMarkdown(r.RSSSamples, r.WarmupSec))
	b.WriteString(heapProfilesMarkdown(r))
	return b.String()
}

// runtimeMemMarkdown is the Go runtime's view of walcast's memory beside
// its RSS, once a minute and at the end, with the change from the end of
// the warm-up: where RSS growth goes (heap, stacks, or memory the runtime
// keeps); empty when the samples carry no runtime figures.
func runtimeMemMarkdown(s []RSSSample, warmupSec float64) string {
	var rows []RSSSample
	next := 60.0
	var last *RSSSample
	for i, x := range s {
		if x.GoSys == 0 {
			continue
		}
		last = &s[i]
		if x.Sec >= next-1 {
			rows = append(rows, x)
			for next <= x.Sec+1 {
				next += 60
			}
		}
	}
	if last == nil {
		return ""
	}
	if len(rows) == 0 || rows[len(rows)-1].Sec != last.Sec {
		rows = append(rows, *last) // the end, between two minutes
	}
	var b strings.Builder
	b.WriteString("\nThe Go runtime's figures beside RSS (walcast's /metrics, go_memstats_*; MiB): heap in use (spans holding objects), " +
		"heap kept idle (free spans not returned to the OS: the runtime keeps about 10% over the GC goal), heap released, goroutine stacks, " +
		"GC goal (the heap size at which the next collection ends: (1 + GOGC/100) × what the last one found live, plus stacks), " +
		"and all the runtime holds from the OS.\n\n")
	b.WriteString("| s | RSS | heap in use | heap kept idle | heap released | stacks | GC goal | runtime from OS | goroutines |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	m := func(v int64) string { return fmt.Sprintf("%.1f", float64(v)/(1<<20)) }
	d := func(v int64) string { return fmt.Sprintf("%+.1f", float64(v)/(1<<20)) }
	var first *RSSSample
	for i, x := range rows {
		fmt.Fprintf(&b, "| %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Sec, m(x.RSS), m(x.HeapInuse), m(x.HeapIdle-x.HeapReleased),
			m(x.HeapReleased), m(x.Stacks), m(x.GCGoal), m(x.GoSys), num(float64(x.Goroutines)))
		if first == nil && x.Sec >= warmupSec-1 {
			first = &rows[i]
		}
	}
	if last := rows[len(rows)-1]; first != nil && last.Sec > first.Sec {
		fmt.Fprintf(&b, "| change %.0f → %.0f s | %s | %s | %s | %s | %s | %s | %s | %+d |\n", first.Sec, last.Sec, d(last.RSS-first.RSS), d(last.HeapInuse-first.HeapInuse),
			d((last.HeapIdle-last.HeapReleased)-(first.HeapIdle-first.HeapReleased)), d(last.HeapReleased-first.HeapReleased),
			d(last.Stacks-first.Stacks), d(last.GCGoal-first.GCGoal), d(last.GoSys-first.GoSys), last.Goroutines-first.Goroutines)
	}
	return b.String()
}

// heapProfilesMarkdown lists the top in-use allocation sites of each heap
// profile and of the difference between the last and the first.
func heapProfilesMarkdown(r *Result) string {
	if len(r.HeapProfiles) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nHeap profiles of walcast (/debug/pprof/heap?gc=1: what a collection just found live; `go tool pprof -top -sample_index=inuse_space`, by allocation site)")
	if r.HeapNote != "" {
		fmt.Fprintf(&b, ": %s.\n", r.HeapNote)
	} else {
		b.WriteString(".\n")
	}
	for _, h := range r.HeapProfiles {
		fmt.Fprintf(&b, "\nAt %.0f s (`%s`):\n\n", h.Sec, h.Path)
		if h.Top != "" {
			b.WriteString(indent(h.Top) + "\n")
		}
	}
	if n := len(r.HeapProfiles); n > 1 && r.HeapDiffTop != "" {
		fmt.Fprintf(&b, "\nDifference, %.0f s minus %.0f s (`-diff_base`; largest changes first, negative: shrank):\n\n%s\n",
			r.HeapProfiles[n-1].Sec, r.HeapProfiles[0].Sec, indent(r.HeapDiffTop))
	}
	return b.String()
}

// indent makes s a Markdown code block.
func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
