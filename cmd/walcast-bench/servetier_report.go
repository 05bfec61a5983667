package main

import (
	"fmt"
	"strings"
	"time"
)

// serveTierTable renders serve-tier rows: one line per number of
// replicas, then where Redis's time went.
func serveTierTable(rows []ServeTierRow) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("| serve replicas | appended/s (append calls/s) | Redis CPU (%% of a core) | × 1 replica | per replica | Redis out | × 1 replica | per replica | serve CPU per replica: mean (max) | reads/s per replica (entries each) | behind at the end: max entries | all caught up after | deliveries got / expected | machine busy (load avg) |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		cpuPer, outPer, serve, lag, reads := "—", "—", "—", "—", "—"
		if r.Replicas > 0 && len(r.RedisReplicaCPUPct) == 0 { // the primary feeds them
			cpuPer = fmt.Sprintf("%.1f%%", r.RedisCPUPct/float64(r.Replicas))
			outPer = mbps(r.RedisOutPerSec / float64(r.Replicas))
		}
		if r.Replicas > 0 {
			mean, hi := meanMax(r.ServeCPUPct)
			serve = fmt.Sprintf("%.1f%% (%.1f%%)", mean, hi)
			lag = num(float64(maxOf(r.LagAtEnd)))
			if rd := readsPerReplica(&r); rd > 0 {
				reads = fmt.Sprintf("%s (%.1f)", num(rd), r.AppendRate/rd)
			}
		}
		caught := "not within 30 s"
		if r.CatchUpSec >= 0 {
			caught = fmt.Sprintf("%.2f s", r.CatchUpSec)
		}
		p("| %d | %s (%s) | %.1f%% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %.0f%% (%s) |\n",
			r.Replicas, num(r.AppendRate), num(float64(r.AppendCalls)/r.WindowSec), r.RedisCPUPct, ratio(r.RedisCPURatio), cpuPer,
			mbps(r.RedisOutPerSec), ratio(r.RedisOutRatio), outPer, serve, reads, lag, caught,
			num(float64(r.Deliveries)), num(float64(r.ExpectedDeliveries)), r.MachineBusyPct, r.LoadAvg)
	}
	if len(rows) > 0 && len(rows[0].RedisReplicaCPUPct) > 0 {
		p("\nThe Redis replicas the serve replicas follow:\n\n| serve replicas | Redis replica CPU each (%% of a core) | Redis replica out each |\n|---:|---|---|\n")
		for _, r := range rows {
			var cpu, out []string
			for i := range r.RedisReplicaCPUPct {
				cpu = append(cpu, fmt.Sprintf("%.1f%%", r.RedisReplicaCPUPct[i]))
				out = append(out, mbps(r.RedisReplicaOutPerSec[i]))
			}
			p("| %d | %s | %s |\n", r.Replicas, strings.Join(cpu, ", "), strings.Join(out, ", "))
		}
	}
	p("\nThe primary's time by command (%% of a core, INFO commandstats; the script's XADDs are counted under EVALSHA and again under XADD):\n\n")
	p("| serve replicas | commands |\n|---:|---|\n")
	for _, r := range rows {
		var cs []string
		for _, c := range r.Commands {
			// "xinfo|stream" is XINFO STREAM; a | would end the table cell.
			name := strings.ToUpper(strings.ReplaceAll(c.Name, "|", " "))
			cs = append(cs, fmt.Sprintf("%s %.1f%% (%s calls/s)", name, c.CorePct, num(float64(c.Calls)/r.WindowSec)))
		}
		p("| %d | %s |\n", r.Replicas, strings.Join(cs, ", "))
	}
	return b.String()
}

func ratio(v float64) string {
	if v == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v)
}

// mbps formats bytes per second in MB/s (10^6 bytes).
func mbps(v float64) string { return fmt.Sprintf("%.2f MB/s", v/1e6) }

func meanMax(v []float64) (mean, hi float64) {
	for _, x := range v {
		mean += x
		hi = max(hi, x)
	}
	if len(v) > 0 {
		mean /= float64(len(v))
	}
	return mean, hi
}

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// serveTierMarkdown renders the generated serve-tier section of
// docs/benchmarks.md.
func serveTierMarkdown(r *Result, machine string, took time.Duration, quick bool) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("## Scale of the serve tier (`make bench-serve-tier`)\n\n")
	if quick {
		p("**A `--quick` run: too small to be a measurement; it only shows the tool works.**\n\n")
	}
	p("Measured %s; took %s. Every `walcast serve` replica follows the whole stream: this is what each one costs the Redis it reads. "+
		"The changes are appended straight into the stream through walcast's own append path (PostgreSQL and capture are left out: "+
		"they cost the same whatever the number of replicas); each replica has %d clients of one committee each, so delivery is real but light. "+
		"Redis, the replicas, the appender and the clients share the machine.\n\n    %s\n\n", machine, took.Round(time.Second), r.Clients, r.Command)
	b.WriteString(serveTierTable(r.ServeTier))
	if m := tierMarginals(r.ServeTier, r.Rate); m != "" {
		p("\nAbove the appends alone (0 replicas), each replica cost Redis %s. "+
			"Redis's cost is per read, not per entry: a replica reads once per append it wakes up for, and on a busy machine "+
			"it comes back less often and reads more entries at a time. See docs/operations.md for what it means.\n", m)
	}
	return b.String()
}

// tierMarginals says what each replica added to Redis's CPU and network
// out above the row without replicas, for each number of replicas; "" when
// there is no such row.
func tierMarginals(rows []ServeTierRow, rate float64) string {
	var base *ServeTierRow
	for i := range rows {
		if rows[i].Replicas == 0 {
			base = &rows[i]
		}
	}
	if base == nil || rate == 0 {
		return ""
	}
	var parts []string
	for _, r := range rows {
		if r.Replicas == 0 {
			continue
		}
		n := float64(r.Replicas)
		parts = append(parts, fmt.Sprintf("%.1f%% of a core and %s (%s bytes per change) at %d",
			(r.RedisCPUPct-base.RedisCPUPct)/n, mbps((r.RedisOutPerSec-base.RedisOutPerSec)/n),
			num((r.RedisOutPerSec-base.RedisOutPerSec)/n/r.AppendRate), r.Replicas))
	}
	return strings.Join(parts, "; ")
}

// readsPerReplica is how often each replica read the stream (XREAD calls
// per second and replica).
func readsPerReplica(r *ServeTierRow) float64 {
	for _, c := range r.Commands {
		if c.Name == "xread" && r.Replicas > 0 && r.WindowSec > 0 {
			return float64(c.Calls) / r.WindowSec / float64(r.Replicas)
		}
	}
	return 0
}
