package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSoakHeapProfilePaths(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{time.Minute, "bin/soak-heap-1m.pprof"}, {10 * time.Minute, "bin/soak-heap-10m.pprof"}, {90 * time.Second, "bin/soak-heap-90s.pprof"}} {
		if got := heapProfilePath("bin/soak-heap", c.d); got != c.want {
			t.Errorf("heapProfilePath(%s) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := soakHeapPrefix("bin/soak.json"); got != "bin/soak-heap" {
		t.Errorf("soakHeapPrefix = %q, want bin/soak-heap", got)
	}
	steps := soakSet(10*time.Minute, "bin/soak-heap")
	cfg, err := parseConfig(steps[0].args)
	if err != nil {
		t.Fatalf("the soak's own flags: %v", err)
	}
	if cfg.HeapProfile != "bin/soak-heap" || cfg.Sample != 10*time.Second || cfg.Warmup != time.Minute {
		t.Errorf("soak config %+v", cfg)
	}
}

func TestSoakHeapProfileFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--heap-profile", "x"}, // no --sample
		{"--heap-profile", "x", "--sample", "1s", "--server", "minimal"},
		{"--heap-profile-rate", "4096"}, // without --heap-profile
	} {
		if _, err := parseConfig(args); err == nil {
			t.Errorf("parseConfig(%q) accepted", args)
		}
	}
}

func TestSoakTrimPprofTop(t *testing.T) {
	out := `File: walcast
Build ID: 38a8
Type: inuse_space
Time: 2026-12-02 09:19:57 UTC
Showing nodes accounting for 53.61MB, 97.28% of 55.11MB total
Dropped 2 nodes (cum <= 282.14kB)
      flat  flat%   sum%        cum   cum%
   27.51MB 49.92% 49.92%    27.51MB 49.92%  github.com/walcast/walcast/broadcast.fromEntry
`
	got := trimPprofTop(out)
	want := "Showing nodes accounting for 53.61MB, 97.28% of 55.11MB total\n      flat  flat%   sum%        cum   cum%\n   27.51MB 49.92% 49.92%    27.51MB 49.92%  github.com/walcast/walcast/broadcast.fromEntry"
	if got != want {
		t.Errorf("trimPprofTop:\n%s\nwant\n%s", got, want)
	}
}

func TestSoakRuntimeMemReport(t *testing.T) {
	const mb = 1 << 20
	var s []RSSSample
	for i := 1; i <= 19; i++ {
		s = append(s, RSSSample{Sec: float64(i * 10), RSS: int64(100+i) * mb, HeapInuse: 60 * mb, HeapIdle: 30 * mb, HeapReleased: 10 * mb,
			Stacks: 16 * mb, GCGoal: 120 * mb, GoSys: int64(150+i) * mb, Goroutines: 2000 + i})
	}
	md := runtimeMemMarkdown(s, 60)
	for _, want := range []string{"| 60 | 106.0 | 60.0 | 20.0 | 10.0 | 16.0 | 120.0 | 156.0 | 2,006 |", "| 180 | 118.0 |", "| 190 | 119.0 |", "| change 60 → 190 s | +13.0 | +0.0 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| 70 |") {
		t.Errorf("report has more than one row a minute:\n%s", md)
	}
	if runtimeMemMarkdown([]RSSSample{{Sec: 10, RSS: mb}}, 60) != "" {
		t.Error("samples without runtime figures should give no table")
	}
}

// TestSoakHeapProfileTop takes heap profiles from a pprof handler, as the
// soak does from walcast's internal listener, and reads their tops and
// difference with go tool pprof.
func TestSoakHeapProfileTop(t *testing.T) {
	// go test puts its own go command first on PATH, so it is always
	// there: a missing one is a broken environment, not a reason to skip.
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("no go command for go tool pprof: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	s := &server{name: "test", internal: ts.URL}
	dir := t.TempDir()
	ctx := context.Background()
	first, last := filepath.Join(dir, "heap-1m.pprof"), filepath.Join(dir, "heap-2m.pprof")
	if err := s.heapProfile(ctx, first); err != nil {
		t.Fatal(err)
	}
	keep = make([][]byte, 64)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	if err := s.heapProfile(ctx, last); err != nil {
		t.Fatal(err)
	}
	res := &Result{}
	if err := heapTops(ctx, res, []HeapProfile{{Sec: 60, Path: first}, {Sec: 120, Path: last}}); err != nil {
		t.Fatal(err)
	}
	if res.HeapNote != "" {
		t.Fatal(res.HeapNote)
	}
	if !strings.HasPrefix(res.HeapProfiles[1].Top, "Showing nodes") || !strings.Contains(res.HeapDiffTop, "TestSoakHeapProfileTop") {
		t.Errorf("top:\n%s\ndiff:\n%s", res.HeapProfiles[1].Top, res.HeapDiffTop)
	}
	md := heapProfilesMarkdown(res)
	if !strings.Contains(md, "Difference, 120 s minus 60 s") || !strings.Contains(md, "    Showing nodes") {
		t.Errorf("markdown:\n%s", md)
	}
	if _, err := os.Stat(last); err != nil {
		t.Error(err)
	}
}

// keep holds the test's allocation live until the second profile.
var keep [][]byte
