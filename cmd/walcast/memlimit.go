package main

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"sync/atomic"
)

// The memory governor keeps a serving process's footprint from wandering
// with the noise of single garbage collections.
//
// With GOGC alone, each collection sets the next heap goal from what that
// one collection found live: (1 + GOGC/100) × live, plus stacks and
// globals. walcast's live heap is steady (mostly the hub's window of
// 65,536 messages), but what one collection finds live is not: whatever
// is allocated while it marks counts as live, and marking takes longer
// when the machine is busy, so some goals come out 20-40% above the usual
// (the soak saw goals of 112 to 164 MiB around a live heap of 53-62 MiB
// after a forced collection). The heap grows into such a goal, and the
// runtime keeps the pages it touched (its scavenger returns only what
// exceeds the current goal by 10%), so RSS steps up with each new highest
// goal and wanders with the machine's load: the soak's creep.
//
// After each collection the governor sets GOGC for the next one so that
// its heap goal is what the same formula, with the configured GOGC, gives
// for the smallest live heap of the latest governorCycles collections (the
// one least inflated by what was allocated during its marking), and never
// below 1.25 × the live heap of the latest collection, so that a real rise
// (more connections, a burst) costs at most four times as many collections
// until the window of collections catches up, never a collection loop.
// Collections are cheap here (a few percent of a core at the soak's
// load), so the goal it sets costs little. It follows the live heap: a
// leak raises the goal and RSS with it, a few collections behind; what it
// removes is the single-collection inflation. The heap profiles of the
// soak (make soak) show the live heap it follows.
//
// Why GOGC and not the soft memory limit, which gives the same goal: the
// runtime keeps what it maps at or under 95% of the limit, and a goal set
// by the limit ends every cycle at the limit itself, so each cycle it
// returned pages to the system and faulted them back (RSS swung by 5%
// between samples of the soak). A goal set through GOGC keeps up to 10%
// above it mapped, and RSS stays put. GOGC is a ratio of the latest live
// heap, so the governor sets it right after each collection (a finalizer
// tells it), before the next goal matters.
//
// A collection that finds more than twice the smallest live heap of the
// collections seen is a new regime rather than an inflated collection
// (the soak's worst was 1.5 times): the governor goes back to the
// configured GOGC and starts its window over, so a ramp (thousands of
// connections, the window filling at the start) runs on the runtime's own
// goal.
//
// It stays off when GOMEMLIMIT is set (the operator chose a limit, or
// "off" for none) or GOGC=off, and until governorMinCycles collections
// have been seen.

// governorCycles is how many of the latest collections the smallest live
// heap is taken over: enough that some of them marked on a quiet moment
// (16 left the soak's goal wandering by ±5% with the machine's load),
// few enough (about a minute and a half at the soak's load) that it
// follows a real change.
const governorCycles = 32

// governorMinCycles is how many collections the governor waits for, at
// the start and after a new regime, before it sets a limit: the smallest
// of 8 already leaves out single inflated ones, and waiting for all 32
// left the soak's start (the window filling) on the runtime's own goals
// until a minute and a half in.
const governorMinCycles = 8

// governorMetrics are what it reads, in the order step uses them.
var governorMetrics = []string{
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
}

// governorOn: one governor per process (tests run several Apps in one).
var governorOn atomic.Bool

// startMemoryGovernor starts the governor for a run, capture or serve
// process, unless getenv's GOMEMLIMIT or GOGC say otherwise; stop ends it
// and gives the runtime back its configured GOGC.
func startMemoryGovernor(ctx context.Context, log *slog.Logger, getenv func(string) string) (stop func()) {
	gogc, ok := governedGOGC(getenv)
	if !ok || !governorOn.CompareAndSwap(false, true) {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	collected := make(chan struct{}, 1)
	notifyCollections(ctx, collected)
	g := newMemGovernor(gogc)
	log.Debug("memory governor on: the heap goal follows the smallest live heap of the latest collections", "gogc", gogc, "cycles", governorCycles)
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-collected:
				if percent, ok := g.step(); ok {
					debug.SetGCPercent(percent)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		debug.SetGCPercent(int(gogc))
		governorOn.Store(false)
	}
}

// notifyCollections sends on c, without blocking, after each garbage
// collection until ctx ends. A finalizer runs once the collection that
// found its object unreachable is over; each one arms the next.
func notifyCollections(ctx context.Context, c chan<- struct{}) {
	type sentinel struct{ _ *byte } // has a pointer: not a tiny allocation, whose finalizer may never run
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
			if ctx.Err() != nil {
				return
			}
			select {
			case c <- struct{}{}:
			default: // the governor has one to handle already
			}
			arm()
		})
	}
	arm()
}

// governedGOGC returns the GOGC the runtime uses, and false when the
// governor should stay off: GOMEMLIMIT set, or GOGC off.
func governedGOGC(getenv func(string) string) (float64, bool) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	v := getenv("GOGC")
	if v == "" {
		return 100, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, false // off, or a value the runtime itself reads as off
	}
	return float64(n), true
}

// memGovernor computes the limit from the runtime's metrics.
type memGovernor struct {
	gogc    float64
	samples []rtmetrics.Sample
	cycles  uint64   // collections seen at the last step
	lives   []uint64 // live heap found by the latest collections, a ring
	n       int      // collections recorded
}

func newMemGovernor(gogc float64) *memGovernor {
	g := &memGovernor{gogc: gogc, lives: make([]uint64, governorCycles)}
	for _, name := range governorMetrics {
		g.samples = append(g.samples, rtmetrics.Sample{Name: name})
	}
	return g
}

// step reads the metrics and returns the GOGC to set after a new
// collection; false when there is none, or too few yet.
func (g *memGovernor) step() (int, bool) {
	rtmetrics.Read(g.samples)
	v := make([]uint64, len(g.samples))
	for i, s := range g.samples {
		if s.Value.Kind() != rtmetrics.KindUint64 {
			return 0, false // a runtime without the metric
		}
		v[i] = s.Value.Uint64()
	}
	cycles, live, stacks, globals := v[0], v[1], v[2], v[3]
	if cycles == g.cycles {
		return 0, false
	}
	g.cycles = cycles
	if seen := g.lives[:min(g.n, len(g.lives))]; len(seen) > 0 && live > 2*slices.Min(seen) {
		// A new regime, not an inflated collection (those stay well
		// under twice the smallest): many more connections, or the
		// window filling at the start. Start the window over, with the
		// configured GOGC until it is full again.
		g.lives[0], g.n = live, 1
		return int(g.gogc), true
	}
	g.lives[g.n%len(g.lives)] = live
	g.n++
	if g.n < governorMinCycles {
		return 0, false
	}
	return governedPercent(g.gogc, slices.Min(g.lives[:min(g.n, len(g.lives))]), live, stacks, globals), true
}

// governedPercent is the GOGC that makes the next heap goal, counted from
// the latest live heap, what gogc gives for the live heap base, or 1.25 ×
// the latest live heap when more (with GOGC 100). The runtime's goal is
// live + (live + stacks + globals) × GOGC/100.
func governedPercent(gogc float64, base, latest, stacks, globals uint64) int {
	goal := float64(base) + (float64(base)+float64(stacks)+float64(globals))*gogc/100
	floor := float64(latest) * (1 + gogc/400)
	scan := float64(latest) + float64(stacks) + float64(globals)
	percent := math.Ceil((max(goal, floor) - float64(latest)) * 100 / scan)
	return int(min(max(percent, 1), gogc))
}
