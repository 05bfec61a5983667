package main

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []int64{0, 1, 31, 32, 33, 63, 64, 65, 1000, 1 << 20, 123456789, 1<<62 + 12345} {
		i := bucketOf(v)
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Errorf("bucketOf(%d) = %d with bounds [%d, %d]", v, i, lo, hi)
		}
		if v >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-9 {
			t.Errorf("bucket of %d is [%d, %d]: wider than 1/%d", v, lo, hi, subCount)
		}
	}
	if n := bucketOf(1<<63 - 1); n >= numBucket {
		t.Fatalf("largest value maps to bucket %d of %d", n, numBucket)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := &hist{}
	vals := make([]time.Duration, 0, 100_000)
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		v := time.Duration(r.ExpFloat64() * float64(3*time.Millisecond))
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.95, 0.99, 1} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if got < exact || float64(got) > float64(exact)*(1+1.0/subCount)+1 {
			t.Errorf("q%.2f = %s, exact %s: want within +%.1f%%", q, got, exact, 100.0/subCount)
		}
	}
	if h.Max() != vals[len(vals)-1] {
		t.Errorf("max %s, want %s", h.Max(), vals[len(vals)-1])
	}
	var m hist
	m.Merge(h)
	if m.Count() != h.Count() || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merged histogram differs")
	}
	if (&hist{}).Quantile(0.5) != 0 {
		t.Error("empty histogram should report 0")
	}
	h2 := &hist{}
	h2.Record(-5)
	if h2.Max() != 0 {
		t.Error("negative durations should count as 0")
	}
}

func TestParseConfig(t *testing.T) {
	if _, err := parseConfig(nil); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := map[string][]string{
		"mode":           {"--mode", "fast"},
		"clients":        {"--clients", "19001"},
		"scope":          {"--scope", "everyone"},
		"row-size":       {"--row-size", "10"},
		"rate":           {"--rate", "-1"},
		"tx-size":        {"--tx-size", "0"},
		"idle needs N":   {"--mode", "idle"},
		"remote target":  {"--target", "ws://10.0.0.1:8080", "--jwt-secret", "s", "--database-url", "postgres://127.0.0.1/x"},
		"target secret":  {"--target", "ws://127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"},
		"target db":      {"--target", "ws://127.0.0.1:8080", "--jwt-secret", "s"},
		"remote db":      {"--database-url", "postgres://db.example.com/x"},
		"drain + target": {"--mode", "drain", "--target", "ws://127.0.0.1:8080", "--jwt-secret", "s"},
		"minimal drain":  {"--server", "minimal", "--mode", "drain"},
		"fsync":          {"--redis-fsync", "everysec"},
		"replicas":       {"--redis-replicas", "5"},
		"extra argument": {"extra"},
		"bad flag":       {"--nope"},
	}
	for name, args := range bad {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("%s: %v accepted", name, args)
		}
	}
	cfg, err := parseConfig([]string{"--target", "ws://localhost:8080", "--jwt-secret", "s", "--database-url", "postgres://127.0.0.1:5432/x",
		"--walcast-flags", "--client-window 1024 --history 5"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.WalcastArgs, []string{"--client-window", "1024", "--history", "5"}) {
		t.Errorf("walcast flags %q", cfg.WalcastArgs)
	}
}

func TestSentAt(t *testing.T) {
	f := sampleFrame(nil, 7, time.Unix(0, 1764161541509891000), 40)
	if v, ok := sentAt(f); !ok || v != 1764161541509891000 {
		t.Errorf("sentAt = %d, %v", v, ok)
	}
	for _, s := range []string{`{"type":"welcome","position":"0-0"}`, `{"notes":":x"}`, `{"notes":"12a:x"}`, `{"notes":"123"}`} {
		if _, ok := sentAt([]byte(s)); ok {
			t.Errorf("sentAt(%s) found a time", s)
		}
	}
}

// A fragmented text message, a ping in between and a close frame, as a
// server may send them.
func TestReadMessage(t *testing.T) {
	var in bytes.Buffer
	in.Write([]byte{0x01, 3})
	in.WriteString(`{"a`)
	in.Write([]byte{0x89, 2, 'h', 'i'}) // ping
	in.Write([]byte{0x80, 126, 0, 200})
	in.WriteString(`":"` + strings.Repeat("x", 195) + `"}`)
	in.Write([]byte{0x88, 2, 4008 >> 8, 4008 & 0xff})
	var out bytes.Buffer
	c := &client{br: bufio.NewReader(&in), conn: fakeConn{w: &out}}
	buf := make([]byte, 8)
	n, err := c.readMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"` + strings.Repeat("x", 195) + `"}`; string(buf[:n]) != want {
		t.Errorf("message %q", buf[:n])
	}
	if !bytes.Equal(out.Bytes(), []byte{0x8A, 0x82, 0, 0, 0, 0, 'h', 'i'}) {
		t.Errorf("pong % x", out.Bytes())
	}
	_, err = c.readMessage(&buf)
	if ce, ok := err.(*closeError); !ok || ce.code != 4008 {
		t.Errorf("close: %v", err)
	}
	if _, err := c.readMessage(&buf); err != io.EOF {
		t.Errorf("after close: %v", err)
	}
}

func TestWSFrameLengths(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		f := wsFrame(make([]byte, n))
		c := &client{br: bufio.NewReader(bytes.NewReader(f))}
		buf := []byte{}
		got, err := c.readMessage(&buf)
		if err != nil || got != n {
			t.Errorf("frame of %d: read %d, %v", n, got, err)
		}
	}
}

func TestExpectedDeliveries(t *testing.T) {
	cfg := &Config{Clients: 1000, Scope: "committee", Committees: 100}
	if got := expectedDeliveries(10_000, cfg); got != 100_000 {
		t.Errorf("committee scope: %d", got)
	}
	cfg = &Config{Clients: 5, Scope: "committee", Committees: 3} // committees get 2, 2, 1 clients
	if got := expectedDeliveries(4, cfg); got != 2+2+2+1 {       // rows to committees 1, 2, 3, 1
		t.Errorf("uneven: %d", got)
	}
	cfg.Scope = "admin"
	if got := expectedDeliveries(4, cfg); got != 20 {
		t.Errorf("admin: %d", got)
	}
}

func TestParseMetrics(t *testing.T) {
	in := "# HELP x\nwalcast_changes_total{table=\"public.guarantee\",action=\"insert\"} 10\nwalcast_changes_total{table=\"public.vote_count\",action=\"update\"} 5\nwalcast_deliveries_total 1.5e+06\n"
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	if m["walcast_changes_total"] != 15 || m["walcast_deliveries_total"] != 1.5e6 {
		t.Errorf("%v", m)
	}
}

func TestReportRendering(t *testing.T) {
	rs := []*Result{
		{Label: "capture", Mode: "drain", Bus: "redis", DrainRows: 1000, DrainRate: 120_000, RecvlogicalRate: 160_000, DrainRatio: 0.75, Command: "walcast-bench --mode drain"},
		{Label: "xadd", Mode: "xadd", XAdd: []XAddResult{{1, "no", 40_000}, {10, "no", 150_000}, {100, "always", 60_000}}, Command: "walcast-bench --mode xadd"},
		{Label: "latency", Mode: "live", Rate: 10_000, LatencyP50Ms: 3, LatencyP99Ms: 30, Command: "walcast-bench --rate 10000"},
		{Label: "latency", Mode: "live", Rate: 1_000, LatencyP50Ms: 1, LatencyP99Ms: 4, Command: "walcast-bench --rate 1000"},
		{Label: "fanout", Mode: "live", Clients: 1000, DeliveriesPerSec: 400_000, CPUMicrosPerDeliv: 2},
		{Label: "fanout-baseline", Mode: "live", Clients: 1000, DeliveriesPerSec: 450_000},
		{Label: "fanout", Mode: "live", Clients: 10000, DeliveriesPerSec: 300_000, CPUMicrosPerDeliv: 3},
		{Label: "idle", Mode: "idle", IdleConns: 19000, BytesPerConn: 12 * 1024},
	}
	rep := buildReport(rs)
	md := rep.markdown("today", time.Minute, "chart.svg", false)
	for _, want := range []string{
		"| capture into Redis vs pg_recvlogical on the same WAL (walcast run) | ≥ 0.70 | 0.75 (120,000 vs 160,000 rows/s) | met |",
		"| latency at 10,000 changes/s, 1,000 committee clients: p99 | ≤ 25 ms | 30.0 ms | **missed** |",
		"| fan-out to 1,000 clients vs the minimal server | ≥ 0.80 | 0.89 (400,000 vs 450,000/s) | met |",
		"| CPU per delivery at 10,000 vs 1,000 clients | flat (≤ 1.25×) | 3.00 µs vs 2.00 µs (1.50×) | **missed** |",
		"| RSS per idle connection at 19,000 connections | ≤ 16 KiB | 12.0 KiB | met |",
		"| 10 | 150,000 | 0 |",
		"![p50 and p99 latency against load](chart.svg)",
		"    walcast-bench --rate 1000\n    walcast-bench --rate 10000\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, r := range rs {
		if !strings.Contains(r.Markdown(), "| what | value |") {
			t.Errorf("%s: no table", r.Label)
		}
	}

	svg := latencySVG(rep.latencyPoints())
	dec := xml.NewDecoder(strings.NewReader(svg))
	circles := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "circle" {
			circles++
		}
	}
	if circles != 4 {
		t.Errorf("%d points drawn, want 4", circles)
	}
}

func TestReplaceSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.md")
	os.WriteFile(p, []byte("# Title\n\nkept\n"), 0o644)
	if err := replaceSection(p, "<!-- b -->", "<!-- e -->", "one"); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(p, "<!-- b -->", "<!-- e -->", "two"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "# Title\n\nkept\n\n<!-- b -->\n\ntwo\n\n<!-- e -->\n" {
		t.Errorf("got %q", b)
	}
}

func TestCommandLineHidesSecret(t *testing.T) {
	got := commandLine([]string{"--jwt-secret", "hunter2", "--rate", "5", "--walcast-flags", "--history 5"})
	if strings.Contains(got, "hunter2") || !strings.Contains(got, "'--history 5'") {
		t.Errorf("%s", got)
	}
}

// fakeConn records what the client writes; nothing else is called.
type fakeConn struct {
	net.Conn
	w io.Writer
}

func (f fakeConn) Write(p []byte) (int, error) { return f.w.Write(p) }
