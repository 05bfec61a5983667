package broadcast

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/walcast/walcast/schema"
)

// countingHistory counts the entries replays read from the bus.
type countingHistory struct {
	History
	calls, read atomic.Int64
}

func (h *countingHistory) Since(ctx context.Context, pos schema.Position, limit int) ([]*schema.Message, error) {
	h.calls.Add(1)
	msgs, err := h.History.Since(ctx, pos, limit)
	h.read.Add(int64(len(msgs)))
	return msgs, err
}

// newCountingServer is a test server whose hub window holds window
// messages and whose bus keeps history; replays' bus reads are counted.
func newCountingServer(t *testing.T, window, history int) (*testServer, *countingHistory) {
	t.Helper()
	hub := NewHub(window)
	bus := NewMemoryBus(history, hub)
	h := &countingHistory{History: bus}
	_, url := startServer(t, ServerConfig{Hub: hub, History: h})
	return &testServer{url: url, bus: bus, hub: hub}, h
}

// publishMany stores n messages of committee 1 in one append.
func (s *testServer) publishMany(t *testing.T, n int) []schema.Position {
	t.Helper()
	msgs := make([]schema.Message, n)
	out := make([]schema.Position, n)
	for i := range msgs {
		s.seq++
		pos := schema.Position{LSN: 1000 + s.seq}
		msgs[i] = schema.Message{Pos: pos, Type: schema.TypeGuarantee, Committee: 1, HasCommittee: true,
			JSON: []byte(fmt.Sprintf(`{"id":%q,"type":"guarantee_update"}`, pos))}
		out[i] = pos
	}
	if err := s.bus.Append(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	return out
}

// A connection that sends resume frames back to back gets a rate_limited
// error for each one past the burst, and stays open.
func TestResumeFramesAreRateLimited(t *testing.T) {
	s, h := newCountingServer(t, 0, 1000)
	s.publishMany(t, 100)
	c := connect(t, s, mint(t, 9, "user", 2), "") // may receive none of them
	for i := 0; i < 10; i++ {
		c.send(`{"type":"resume","since":"0-0"}`)
	}
	c.send(`{"type":"ping"}`)
	limited := 0
	for {
		m := c.read()
		if m["type"] == "pong" {
			break
		}
		if m["type"] != "error" || m["code"] != "rate_limited" {
			t.Fatalf("got %v, want rate_limited errors then pong", m)
		}
		limited++
	}
	if limited != 10-int(resumeBurst) {
		t.Errorf("%d of 10 back-to-back resume frames refused, want %d", limited, 10-int(resumeBurst))
	}
	if n := h.calls.Load(); n != 0 {
		t.Errorf("resumes from 0-0 within the window read the bus %d times, want none", n)
	}
}

// Replays from inside the window read nothing from the bus; a position
// older than the history gets resync_required without reading an entry.
func TestReplayFromTheWindowReadsNoBus(t *testing.T) {
	s, h := newCountingServer(t, 16, 8) // the window holds more than the bus keeps
	ps := s.publishMany(t, 20)
	c := connect(t, s, mint(t, 1, "admin"), "since="+ps[15].String())
	got := c.ids(4)
	for i, id := range got {
		if id != ps[16+i].String() {
			t.Fatalf("replay from the window: %v, want %v…", got, ps[16:])
		}
	}
	for _, since := range []string{ps[2].String(), "0-0"} {
		c := connect(t, s, mint(t, 1, "admin"), "since="+since)
		if m := c.read(); m["type"] != "resync_required" || m["position"] != ps[19].String() {
			t.Errorf("since=%s (older than the history): %v, want resync_required at the head", since, m)
		}
	}
	live := s.publishMany(t, 1)[0]
	if got := c.ids(1)[0]; got != live.String() {
		t.Errorf("after the replay: %s, want the live %s", got, live)
	}
	if n := h.read.Load(); n != 0 {
		t.Errorf("%d entries read from the bus, want none", n)
	}
}

// A position older than the window but inside the bus's history is read
// from the bus; one too far behind stops after MaxReplayRead
// entries with resync_required.
func TestReplayReadsOfTheBusAreBounded(t *testing.T) {
	s, h := newCountingServer(t, 64, 3*MaxReplayRead)
	ps := s.publishMany(t, 2*MaxReplayRead)
	near := ps[len(ps)-64-10]
	c := connect(t, s, mint(t, 1, "admin"), "since="+near.String())
	got := c.ids(9 + 64)
	if got[0] != ps[len(ps)-64-9].String() || got[len(got)-1] != ps[len(ps)-1].String() {
		t.Fatalf("gap replay: %s … %s", got[0], got[len(got)-1])
	}
	if n := h.read.Load(); n > int64(9+64) {
		t.Errorf("a gap of 10 entries read %d from the bus", n)
	}
	h.read.Store(0)
	far := connect(t, s, mint(t, 9, "user", 2), "since="+ps[0].String()) // receives none of them
	if m := far.read(); m["type"] != "resync_required" {
		t.Fatalf("a replay further behind than MaxReplayRead: %v, want resync_required", m)
	}
	if n := h.read.Load(); n > MaxReplayRead {
		t.Errorf("one replay read %d entries from the bus, more than MaxReplayRead (%d)", n, MaxReplayRead)
	}
}

// A client moved back to the oldest message the window serves is not
// closed as too slow by the next publish: replays leave a margin.
func TestReplayFromTheWindowEdgeSurvivesThePublishes(t *testing.T) {
	s, _ := newCountingServer(t, 64, 1000)
	ps := s.publishMany(t, 200)
	oldest := ps[len(ps)-int(64-64/8)] // the oldest the window serves
	c := connect(t, s, mint(t, 1, "admin"), "since="+oldest.String())
	s.publishMany(t, 4)
	got := c.ids(64 - 64/8 - 1 + 4)
	if got[len(got)-1] != fmt.Sprint(schema.Position{LSN: 1000 + s.seq}) {
		t.Errorf("replay then live ended at %s", got[len(got)-1])
	}
}
