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

func TestMemoryGovernorPercent(t *testing.T) {
	const mib = 1 << 20
	// GOGC is a whole percent of what the collector scans, so the goal
	// lands at most one percent of that above the one wanted.
	goalOf := func(p int, latest float64) float64 { return latest + (latest+16+1)*float64(p)/100 }
	near := func(got, want, latest float64) bool { return got >= want && got < want+(latest+17)/100 }
	// The soak's steady state: the goal GOGC 100 gives for the smallest
	// live heap (55 + 72 MiB), counted from the latest, inflated one.
	if p := governedPercent(100, 55*mib, 82*mib, 16*mib, 1*mib); !near(goalOf(p, 82), 127, 82) {
		t.Errorf("GOGC %d gives a goal of %.1f MiB, want 127", p, goalOf(p, 82))
	}
	// A rise (more connections): never below 1.25 × the latest live heap.
	if p := governedPercent(100, 55*mib, 200*mib, 16*mib, 1*mib); !near(goalOf(p, 200), 250, 200) {
		t.Errorf("GOGC %d after a rise gives a goal of %.1f MiB, want 250", p, goalOf(p, 200))
	}
	// Never above the configured GOGC, never off.
	if p := governedPercent(100, 90*mib, 50*mib, 0, 0); p != 100 {
		t.Errorf("GOGC %d with the latest heap the smallest, want 100", p)
	}
	if p := governedPercent(100, 1, 1<<40, 0, 0); p < 1 {
		t.Errorf("GOGC %d: the collector would stop", p)
	}
}

// TestMemoryGovernorFollowsCollections runs the governor's step over real
// collections: nothing before governorMinCycles of them, then a GOGC.
func TestMemoryGovernorFollowsCollections(t *testing.T) {
	g := newMemGovernor(100)
	for i := range governorMinCycles - 1 {
		runtime.GC()
		if _, ok := g.step(); ok {
			t.Fatalf("a GOGC after %d collections", i+1)
		}
	}
	if _, ok := g.step(); ok {
		t.Fatal("a GOGC without a new collection")
	}
	runtime.GC()
	percent, ok := g.step()
	if !ok || percent < 1 || percent > 100 {
		t.Fatalf("GOGC %d (ok %v), want 1 to 100", percent, ok)
	}
	// Three times the live heap at once: a new regime, the configured
	// GOGC until the window is full again.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	grown := make([][]byte, 0, 2*ms.HeapAlloc>>20+8)
	for range cap(grown) {
		grown = append(grown, make([]byte, 1<<20))
	}
	runtime.GC()
	if percent, ok := g.step(); !ok || percent != 100 {
		t.Fatalf("after the heap grew by %d MiB: GOGC %d (ok %v), want 100 back", len(grown), percent, ok)
	}
	runtime.GC()
	if _, ok := g.step(); ok {
		t.Fatal("a governed GOGC right after a new regime")
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
		time.Sleep(time.Millisecond) // the finalizer's notice, the governor's step
	}
	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC %d after stop, want the configured 100", p)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d, want none: the governor sets GOGC", l)
	}
	if governorOn.Load() {
		t.Error("governor still marked on")
	}
}

// TestMemoryGovernorHearsEachCollection: the governor steps after every
// collection, not on a timer, since the GOGC it sets is a ratio of the
// latest live heap.
func TestMemoryGovernorHearsEachCollection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := make(chan struct{}, 1)
	notifyCollections(ctx, c)
	for i := range 5 {
		runtime.GC()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatalf("no notice after collection %d", i+1)
		}
	}
	cancel()
	runtime.GC()
	runtime.GC()
	select {
	case <-c:
		select {
		case <-c:
			t.Fatal("notices go on after ctx ended")
		case <-time.After(50 * time.Millisecond):
		}
	default:
	}
}
