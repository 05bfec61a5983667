package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// HeapProfile is one heap profile of the walcast child taken during a
// sampled run (--heap-profile).
type HeapProfile struct {
	Sec  float64 `json:"s"`    // seconds into the run
	Path string  `json:"path"` // where it was written
	// Top is `go tool pprof -top -sample_index=inuse_space`: the
	// allocation sites of what was in use, largest first.
	Top string `json:"top,omitempty"`
}

// runtimeMem is what the Go runtime of the walcast child reports of its
// memory on /metrics (client_golang's Go collector, go_memstats_*): it
// tells heap from stacks from memory the runtime keeps but does not use.
type runtimeMem struct {
	HeapInuse, HeapIdle, HeapReleased, Stacks, GCGoal, Sys int64
	Goroutines                                             int
}

// readRuntimeMem scrapes the child's /metrics.
func readRuntimeMem(ctx context.Context, s *server) (runtimeMem, error) {
	m, err := s.metrics(ctx)
	if err != nil {
		return runtimeMem{}, err
	}
	if _, ok := m["go_memstats_heap_inuse_bytes"]; !ok {
		return runtimeMem{}, errors.New("no go_memstats_heap_inuse_bytes on /metrics")
	}
	b := func(k string) int64 { return int64(m["go_memstats_"+k+"_bytes"]) }
	return runtimeMem{HeapInuse: b("heap_inuse"), HeapIdle: b("heap_idle"), HeapReleased: b("heap_released"),
		Stacks: b("stack_inuse"), GCGoal: b("next_gc"), Sys: b("sys"), Goroutines: int(m["go_goroutines"])}, nil
}

// heapProfile writes the child's heap profile to path, after a garbage
// collection (?gc=1) so that it shows what is live now rather than as of
// the last cycle; one collection changes nothing lasting in the RSS.
func (s *server) heapProfile(ctx context.Context, path string) error {
	if s.internal == "" {
		return errors.New("no internal listener to take a heap profile from")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := fetchTo(ctx, s.internal+"/debug/pprof/heap?gc=1", path); err != nil {
		return fmt.Errorf("heap profile of %s: %w", s.name, err)
	}
	return nil
}

// heapProfilePath names the profile taken at d into the run: prefix-1m.pprof.
func heapProfilePath(prefix string, d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%s-%dm.pprof", prefix, int(d/time.Minute))
	}
	return fmt.Sprintf("%s-%ds.pprof", prefix, int(d.Round(time.Second)/time.Second))
}

// pprofTop runs `go tool pprof -top` on the in-use space of path, against
// base when not empty (-diff_base: what grew and what shrank since base,
// largest change first), and returns the table from its "Showing nodes"
// line on. The profiles carry their symbols: no binary is needed.
func pprofTop(ctx context.Context, path, base string, nodes int) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no go command for go tool pprof: read the profiles with it elsewhere")
	}
	args := []string{"tool", "pprof", "-top", "-sample_index=inuse_space", fmt.Sprintf("-nodecount=%d", nodes)}
	if base != "" {
		args = append(args, "-diff_base="+base)
	}
	args = append(args, path)
	cmd := exec.CommandContext(ctx, goBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -top %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return trimPprofTop(string(out)), nil
}

// trimPprofTop keeps pprof's totals line and table, without the file,
// build id and dropped-node lines.
func trimPprofTop(s string) string {
	var keep []string
	on := false
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.HasPrefix(line, "Showing nodes") {
			on = true
		}
		if !on || strings.HasPrefix(line, "Dropped ") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}
