package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestMemoryGovernorGOGC(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		gogc float64
		on   bool
	}{
		{map[string]string{}, 100, true},
		{map[string]string{"GOGC": "50"}, 50, true},
		{map[string]string{"GOGC": "off"}, 0, false},
		{map[string]string{"GOMEMLIMIT": "1GiB"}, 0, false},
		{map[string]string{"GOMEMLIMIT": "off"}, 0, false},
	} {
		gogc, on := governedGOGC(func(k string) string { return c.env[k] })
		if gogc != c.gogc || on != c.on {
			t.Errorf("%v: got %v %v, want %v %v", c.env, gogc, on, c.gogc, c.on)
		}
	}
}

func TestMemoryGovernorLimit(t *testing.T) {
	const mib = 1 << 20
	// The soak's steady state: the goal GOGC 100 gives for the smallest
	// live heap, plus what is not heap.
	got := governedLimit(100, 55*mib, 82*mib, 16*mib, 1*mib, 26*mib)
	goal := float64((55 + 72) * mib)
	want := 26*mib + int64(1.05*goal)
	if got != want {
		t.Errorf("limit %d MiB, want %d MiB", got/mib, want/mib)
	}
	// A rise (more connections): never below 1.25 × the latest live heap.
	got = governedLimit(100, 55*mib, 200*mib, 16*mib, 1*mib, 26*mib)
	floor := float64(250 * mib)
	if want := 26*mib + int64(1.05*floor); got != want {
		t.Errorf("limit after a rise %d MiB, want %d MiB", got/mib, want/mib)
	}
}

// TestMemoryGovernorFollowsCollections runs the governor's step over real
// collections: no limit before governorMinCycles of them, then one above
// what is live.
func TestMemoryGovernorFollowsCollections(t *testing.T) {
	g := newMemGovernor(100)
	for i := range governorMinCycles - 1 {
		runtime.GC()
		if _, ok := g.step(); ok {
			t.Fatalf("a limit after %d collections", i+1)
		}
	}
	if _, ok := g.step(); ok {
		t.Fatal("a limit without a new collection")
	}
	runtime.GC()
	limit, ok := g.step()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if !ok || limit <= int64(ms.HeapAlloc) || limit > int64(ms.Sys)*4 {
		t.Fatalf("limit %d (ok %v) with heap %d, sys %d", limit, ok, ms.HeapAlloc, ms.Sys)
	}
	// Three times the live heap at once: a new regime, no limit until
	// the window is full again.
	grown := make([][]byte, 0, 2*ms.HeapAlloc>>20+8)
	for range cap(grown) {
		grown = append(grown, make([]byte, 1<<20))
	}
	runtime.GC()
	if limit, ok := g.step(); !ok || limit != math.MaxInt64 {
		t.Fatalf("after the heap grew by %d MiB: limit %d (ok %v), want it lifted", len(grown), limit, ok)
	}
	runtime.GC()
	if _, ok := g.step(); ok {
		t.Fatal("a limit right after a new regime")
	}
	runtime.KeepAlive(grown)
}

func TestMemoryGovernorStops(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stop := startMemoryGovernor(context.Background(), log, func(string) string { return "" })
	// A second one in the same process does nothing.
	stop2 := startMemoryGovernor(context.Background(), log, func(string) string { return "" })
	stop2()
	if !governorOn.Load() {
		t.Fatal("the second governor's stop ended the first")
	}
	for range governorCycles + 1 {
		runtime.GC()
	}
	time.Sleep(2 * governorTick)
	stop()
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("limit %d after stop, want none", l)
	}
	if governorOn.Load() {
		t.Error("governor still marked on")
	}
}
