package main

import (
	"fmt"
	"strings"
	"time"
)

// Result is what one run measured. Zero fields did not apply.
type Result struct {
	Label   string    `json:"label,omitempty"`
	Command string    `json:"command"`
	Started time.Time `json:"started"`

	Mode       string  `json:"mode"`
	Bus        string  `json:"bus,omitempty"`
	Server     string  `json:"server,omitempty"`
	Clients    int     `json:"clients,omitempty"`
	Scope      string  `json:"scope,omitempty"`
	Committees int     `json:"committees,omitempty"`
	Rate       float64 `json:"rate,omitempty"`
	TxSize     int     `json:"tx_size,omitempty"`
	RowSize    int     `json:"row_size,omitempty"`
	RedisFsync string  `json:"redis_fsync,omitempty"`
	// RedisReplicas: replicas of the bench's Redis (--redis-replicas).
	RedisReplicas int `json:"redis_replicas,omitempty"`

	// live
	WindowSec    float64 `json:"window_s,omitempty"`
	RowsWritten  int64   `json:"rows_written,omitempty"`
	WriteRate    float64 `json:"write_rate,omitempty"`
	LatencyP50Ms float64 `json:"latency_p50_ms,omitempty"`
	LatencyP95Ms float64 `json:"latency_p95_ms,omitempty"`
	LatencyP99Ms float64 `json:"latency_p99_ms,omitempty"`
	LatencyMaxMs float64 `json:"latency_max_ms,omitempty"`
	// The latency of client 0's frames cut at their commit time (see
	// splitHist): writer → commit, and commit → client.
	CommitP50Ms        float64 `json:"commit_p50_ms,omitempty"`
	CommitP99Ms        float64 `json:"commit_p99_ms,omitempty"`
	AfterCommitP50     float64 `json:"after_commit_p50_ms,omitempty"`
	AfterCommitP99     float64 `json:"after_commit_p99_ms,omitempty"`
	ChangesPerSec      float64 `json:"changes_per_s,omitempty"`
	Deliveries         int64   `json:"deliveries,omitempty"`
	ExpectedDeliveries int64   `json:"expected_deliveries,omitempty"`
	DeliveriesPerSec   float64 `json:"deliveries_per_s,omitempty"`
	ServerDeliveries   float64 `json:"server_deliveries_per_s,omitempty"`
	CPUPercent         float64 `json:"cpu_percent,omitempty"`
	CPUMicrosPerDeliv  float64 `json:"cpu_us_per_delivery,omitempty"`
	PeakRSS            int64   `json:"peak_rss_bytes,omitempty"`
	EndRSS             int64   `json:"end_rss_bytes,omitempty"`
	Resumes            int64   `json:"resumes,omitempty"`
	FailedClients      int64   `json:"failed_clients,omitempty"`
	BenchCPUPercent    float64 `json:"bench_cpu_percent,omitempty"`

	// LoadAvg is the machine's 1-minute load average at the end of the run.
	LoadAvg float64 `json:"loadavg_1m,omitempty"`

	// drain
	// WalcastCmd is the walcast command that captured: run or capture.
	WalcastCmd      string  `json:"walcast_cmd,omitempty"`
	DrainRows       int     `json:"drain_rows,omitempty"`
	InsertRate      float64 `json:"insert_rate,omitempty"`
	DrainRate       float64 `json:"drain_rate,omitempty"`
	RecvlogicalRate float64 `json:"recvlogical_rate,omitempty"`
	DrainRatio      float64 `json:"drain_ratio,omitempty"`

	// idle
	IdleConns     int     `json:"idle_conns,omitempty"`
	RSSBefore     int64   `json:"rss_before_bytes,omitempty"`
	RSSAfter      int64   `json:"rss_after_bytes,omitempty"`
	BytesPerConn  float64 `json:"bytes_per_conn,omitempty"`
	ConnectPerSec float64 `json:"connects_per_s,omitempty"`

	// xadd
	XAdd []XAddResult `json:"xadd,omitempty"`

	// serve-tier: one row per number of serve replicas
	ServeTier []ServeTierRow `json:"serve_tier,omitempty"`
	// ServeFromReplicas: the serve replicas followed the Redis replicas.
	ServeFromReplicas bool `json:"serve_from_replicas,omitempty"`

	// --sample
	RSSSamples   []RSSSample `json:"rss_samples,omitempty"`
	RSSSpreadPct float64     `json:"rss_spread_pct,omitempty"`
	RSSFlat      *bool       `json:"rss_flat,omitempty"`
	// WarmupSec: samples before it are left out of the flatness check.
	WarmupSec float64 `json:"warmup_s,omitempty"`
	// --heap-profile: the profiles taken, the difference of the last from
	// the first (go tool pprof -top -diff_base), and why the tops are
	// missing when they are.
	HeapProfiles []HeapProfile `json:"heap_profiles,omitempty"`
	HeapDiffTop  string        `json:"heap_diff_top,omitempty"`
	HeapNote     string        `json:"heap_note,omitempty"`
}

// XAddResult is one configuration of the pipelined XADD baseline.
type XAddResult struct {
	Batch int     `json:"batch"`
	Fsync string  `json:"fsync"` // "no" or "always"
	Rate  float64 `json:"rate"`  // appends/s
}

// RSSSample is the server's resident memory at a time into the run and,
// for a walcast child with an internal listener, its Go runtime's view of
// it (go_memstats_* on /metrics; zero when not read): RSS that grows with
// HeapInuse is heap, with Stacks is goroutine stacks, and with HeapIdle
// minus HeapReleased is memory the runtime keeps without using it.
type RSSSample struct {
	Sec          float64 `json:"s"`
	RSS          int64   `json:"rss_bytes"`
	HeapInuse    int64   `json:"heap_inuse_bytes,omitempty"`
	HeapIdle     int64   `json:"heap_idle_bytes,omitempty"`     // free spans, returned to the OS or not
	HeapReleased int64   `json:"heap_released_bytes,omitempty"` // of HeapIdle, returned to the OS
	Stacks       int64   `json:"stack_inuse_bytes,omitempty"`
	GCGoal       int64   `json:"gc_goal_bytes,omitempty"` // heap size at which the next collection ends
	GoSys        int64   `json:"go_sys_bytes,omitempty"`  // all the runtime got from the OS
	Goroutines   int     `json:"goroutines,omitempty"`
}

// Markdown renders one result as a two-column table.
func (r *Result) Markdown() string {
	var b strings.Builder
	title := r.Label
	if title == "" {
		title = r.Mode
	}
	fmt.Fprintf(&b, "### %s\n\n```sh\n%s\n```\n\n| what | value |\n|---|---:|\n", title, r.Command)
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	switch r.Mode {
	case "live":
		row("server", r.Server+" (bus "+r.Bus+")")
		row("clients", fmt.Sprintf("%s, scope %s, %d committees", num(float64(r.Clients)), r.Scope, r.Committees))
		row("writer", fmt.Sprintf("%s changes/s asked, %s/s achieved, %d rows/tx, %d B payload", rate(r.Rate), num(r.WriteRate), r.TxSize, r.RowSize))
		row("latency p50 / p95 / p99 / max", fmt.Sprintf("%s / %s / %s / %s ms", ms(r.LatencyP50Ms), ms(r.LatencyP95Ms), ms(r.LatencyP99Ms), ms(r.LatencyMaxMs)))
		if r.CommitP50Ms > 0 || r.AfterCommitP50 > 0 {
			row("client 0: writer → commit, commit → client p50 / p99", fmt.Sprintf("%s / %s ms, %s / %s ms", ms(r.CommitP50Ms), ms(r.CommitP99Ms), ms(r.AfterCommitP50), ms(r.AfterCommitP99)))
		}
		row("changes/s captured", num(r.ChangesPerSec))
		row("deliveries/s (clients)", num(r.DeliveriesPerSec))
		row("deliveries/s (server metric)", num(r.ServerDeliveries))
		row("deliveries received / expected", fmt.Sprintf("%s / %s", num(float64(r.Deliveries)), num(float64(r.ExpectedDeliveries))))
		row("server CPU (% of one core)", fmt.Sprintf("%.0f%%", r.CPUPercent))
		row("server CPU per delivery", fmt.Sprintf("%.2f µs", r.CPUMicrosPerDeliv))
		row("server peak RSS", mib(r.PeakRSS))
		row("bench CPU (% of one core)", fmt.Sprintf("%.0f%%", r.BenchCPUPercent))
		if r.Resumes > 0 || r.FailedClients > 0 {
			row("resumes after 4008 / failed clients", fmt.Sprintf("%d / %d", r.Resumes, r.FailedClients))
		}
		if len(r.RSSSamples) > 0 {
			flat := "no"
			if r.RSSFlat != nil && *r.RSSFlat {
				flat = "yes"
			}
			row("RSS samples (min / max)", fmt.Sprintf("%d (%s / %s)", len(r.RSSSamples), mib(minRSS(r.RSSSamples)), mib(maxRSS(r.RSSSamples))))
			row("RSS within 5% after warm-up", fmt.Sprintf("%s (spread %.1f%%)", flat, r.RSSSpreadPct))
		}
	case "drain":
		row("bus", r.Bus+fsyncNote(r.RedisFsync))
		row("rows (rows/tx, payload)", fmt.Sprintf("%s (%d, %d B)", num(float64(r.DrainRows)), r.TxSize, r.RowSize))
		row("INSERT rate (writer, for reference)", num(r.InsertRate)+"/s")
		row("walcast capture into the bus", num(r.DrainRate)+"/s")
		row("pg_recvlogical, same WAL", num(r.RecvlogicalRate)+"/s")
		row("walcast / pg_recvlogical", fmt.Sprintf("%.2f", r.DrainRatio))
		row("walcast CPU (% of one core)", fmt.Sprintf("%.0f%%", r.CPUPercent))
		row("walcast peak RSS", mib(r.PeakRSS))
	case "idle":
		row("bus", r.Bus)
		row("idle connections", num(float64(r.IdleConns)))
		row("RSS before / after", mib(r.RSSBefore)+" / "+mib(r.RSSAfter))
		row("RSS per idle connection", fmt.Sprintf("%.1f KiB", r.BytesPerConn/1024))
		row("connects/s", num(r.ConnectPerSec))
		row("walcast peak RSS", mib(r.PeakRSS))
	case "xadd":
		for _, x := range r.XAdd {
			row(fmt.Sprintf("XADD, %d per round trip, fsync %s", x.Batch, x.Fsync), num(x.Rate)+"/s")
		}
	case "serve-tier":
		row("appends", fmt.Sprintf("%s changes/s asked, %d per transaction, %d B payload, straight into the stream", rate(r.Rate), r.TxSize, r.RowSize))
		row("clients per replica", fmt.Sprintf("%d, scope %s, %d committees", r.Clients, r.Scope, r.Committees))
		if r.ServeFromReplicas {
			row("serve replicas follow", fmt.Sprintf("the %d Redis replicas, round-robin (Redis figures are the primary's)", r.RedisReplicas))
		}
		b.WriteString("\n" + serveTierTable(r.ServeTier))
	}
	return b.String()
}

func fsyncNote(f string) string {
	if f == "always" {
		return " (appendonly yes, appendfsync always)"
	}
	return ""
}

// num formats a count with thousands separators.
func num(f float64) string {
	n := int64(f + 0.5)
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func rate(r float64) string {
	if r == 0 {
		return "flat out"
	}
	return num(r)
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func minRSS(s []RSSSample) int64 {
	m := s[0].RSS
	for _, x := range s {
		m = min(m, x.RSS)
	}
	return m
}

func maxRSS(s []RSSSample) int64 {
	m := s[0].RSS
	for _, x := range s {
		m = max(m, x.RSS)
	}
	return m
}

// rssFlatness returns the spread of samples taken at or after warmup,
// as (max-min)/min in percent, and whether it is within 5%.
func rssFlatness(s []RSSSample, warmup time.Duration) (float64, bool, bool) {
	var kept []RSSSample
	for _, x := range s {
		if x.Sec >= warmup.Seconds() {
			kept = append(kept, x)
		}
	}
	if len(kept) < 2 {
		return 0, false, false
	}
	lo, hi := minRSS(kept), maxRSS(kept)
	spread := 100 * float64(hi-lo) / float64(lo)
	return spread, spread <= 5, true
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
