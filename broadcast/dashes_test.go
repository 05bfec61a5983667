package broadcast

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/walcast/walcast/schema"
)

// dashMsg is committee c's supervisor dashboard at pos.
func dashMsg(pos schema.Position, c int64) *schema.Message {
	return &schema.Message{Pos: pos, Type: schema.TypeDashboard, DashboardKey: schema.DashboardKey(schema.DashboardSupervisor, c),
		Committee: c, HasCommittee: true, JSON: []byte(`{"type":"dashboard_update"}`)}
}

// publishMixed publishes rounds of one change then perRound dashboards
// (committees 1..perRound), at LSNs from 1; it returns every message in
// publish order.
func publishMixed(h *Hub, rounds, perRound int) []*schema.Message {
	var all []*schema.Message
	for r := range rounds {
		lsn := uint64(r + 1)
		msgs := []*schema.Message{{Pos: schema.Position{LSN: lsn}, Type: "guarantee_update", Committee: 1, HasCommittee: true, JSON: []byte(`{}`)}}
		for i := range perRound {
			msgs = append(msgs, dashMsg(schema.Position{LSN: lsn, Seq: uint64(i + 1)}, int64(i+1)))
		}
		h.Publish(msgs)
		all = append(all, msgs...)
	}
	return all
}

// drain reads everything an admin is owed from cur, as the delivery
// workers do.
func drain(t *testing.T, h *Hub, cur cursors) (got []*schema.Message, lapped bool) {
	t.Helper()
	admin := &Principal{Role: RoleAdmin}
	var buf [7]entry
	for {
		n, to, caughtUp, lost, lap := h.nextFor(cur, buf[:], admin, nil)
		if lost {
			t.Fatalf("the client was lost at %+v", cur)
		}
		if lap {
			return got, true
		}
		for _, e := range buf[:n] {
			got = append(got, e.m)
		}
		cur = to
		if caughtUp {
			return got, false
		}
	}
}

// The window holds its number of changes whatever the dashboards' rate:
// a client a whole window of changes behind, with ten dashboards after
// each change, is not too slow, and receives changes and dashboards in
// the order they were published. (When dashboards shared the window,
// they pushed the changes out: its size in bytes followed their rate.)
func TestDashboardsTakeNoWindowSlots(t *testing.T) {
	h := NewHub(64)
	all := publishMixed(h, 64, 10)
	got, lapped := drain(t, h, cursors{})
	if lapped {
		t.Fatal("640 dashboards lapped a ring of at least 1,024")
	}
	if len(got) != len(all) {
		t.Fatalf("got %d messages, want %d", len(got), len(all))
	}
	for i := range all {
		if got[i] != all[i] {
			t.Fatalf("message %d: got %v (%s), want %v (%s)", i, got[i].Pos, got[i].Type, all[i].Pos, all[i].Type)
		}
	}
	// One more change laps the window: the client at the start is lost.
	h.Publish([]*schema.Message{{Pos: schema.Position{LSN: 100}, JSON: []byte(`{}`)}})
	if _, _, _, lost, _ := h.nextFor(cursors{}, make([]entry, 1), &Principal{Role: RoleAdmin}, nil); !lost {
		t.Fatal("a client a window and one change behind was not lost")
	}
}

// A client that falls more than the dashboard ring behind is not closed:
// it is told it lapped, and the hub's newest dashboards, current at the
// ring's head, replace the ones it missed.
func TestDashboardRingLapGivesNewest(t *testing.T) {
	h := NewHub(4096)
	rounds := len(h.dashes)/10 + 1
	publishMixed(h, rounds, 10)
	if _, lapped := drain(t, h, cursors{}); !lapped {
		t.Fatal("a client more than the dashboard ring behind was not told it lapped")
	}
	msgs, at := h.dashboardsSince(&Principal{Role: RoleAdmin})
	if at != h.dhead {
		t.Fatalf("dashboards current at %d, want the ring's head %d", at, h.dhead)
	}
	if len(msgs) != 10 {
		t.Fatalf("got %d dashboards, want the newest of each of 10", len(msgs))
	}
	for _, m := range msgs {
		if m.Pos.LSN != uint64(rounds) {
			t.Errorf("dashboard %s at %v, want the newest (LSN %d)", m.DashboardKey, m.Pos, rounds)
		}
	}
}

// LimitResume counts the dashboards: the bus's history holds the newest
// depth messages of both kinds, so the window serves no change older
// than those, even though it holds them.
func TestLimitResumeCountsDashboards(t *testing.T) {
	h := NewHub(64)
	h.Start(schema.Position{})
	h.LimitResume(20)
	publishMixed(h, 10, 0) // changes at LSN 1..10: orders 0..9
	var dashes []*schema.Message
	for i := range 15 {
		dashes = append(dashes, dashMsg(schema.Position{LSN: 10, Seq: uint64(i + 1)}, 1))
	}
	h.Publish(dashes) // orders 10..24
	for lsn := uint64(11); lsn <= 15; lsn++ {
		h.Publish([]*schema.Message{{Pos: schema.Position{LSN: lsn}, JSON: []byte(`{}`)}})
	}
	// 30 stored: the bus holds the newest 20, from the dashboard at order 10.
	if _, where := h.seek(schema.Position{LSN: 5}); where == inWindow {
		t.Error("the window served a position older than the bus's history")
	}
	seq, where := h.seek(schema.Position{LSN: 12})
	if where != inWindow || h.window[seq%64].Pos.LSN != 13 {
		t.Errorf("seek(12) = %d, %v; want the window, at the change of LSN 13", seq, where)
	}
}

// TestHubHeapIndependentOfDashboardRate: what the hub holds (messages
// and their frames in the window and the dashboard ring) is the same
// whether dashboards come after every second change or every tenth, once
// traffic has filled both. It counts what the hub references rather than
// the process's heap, which other tests' goroutines move by more than
// the difference it looks for; the heap is logged.
func TestHubHeapIndependentOfDashboardRate(t *testing.T) {
	const window = 1 << 12
	change, dash := strings.Repeat("c", 400), strings.Repeat("d", 200)
	measure := func(every int) (msgs, bytes int, heap uint64) {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		h := NewHub(window)
		for i := range 3 * window {
			lsn := uint64(i + 1)
			msgs := []*schema.Message{{Pos: schema.Position{LSN: lsn}, Type: "guarantee_update", JSON: []byte(change)}}
			if i%every == 0 {
				d := dashMsg(schema.Position{LSN: lsn, Seq: 1}, int64(i%10))
				d.JSON = []byte(dash)
				msgs = append(msgs, d)
			}
			h.Publish(msgs)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, m := range h.window {
			if m != nil {
				msgs, bytes = msgs+1, bytes+len(m.JSON)
			}
		}
		for _, e := range h.dashes {
			if e.m != nil {
				msgs, bytes = msgs+1, bytes+len(e.m.JSON)
			}
		}
		return msgs, bytes, m1.HeapAlloc - m0.HeapAlloc
	}
	fastN, fastB, fastHeap := measure(2)
	slowN, slowB, slowHeap := measure(10)
	t.Logf("hub: %d messages, %d frame bytes, heap +%d with a dashboard every 2 changes; %d, %d, +%d every 10", fastN, fastB, fastHeap, slowN, slowB, slowHeap)
	if fastN != slowN || fastB != slowB {
		t.Errorf("the hub holds %d messages of %d bytes with a dashboard every 2 changes, %d of %d every 10: it should not follow the dashboards' rate", fastN, fastB, slowN, slowB)
	}
}

// BenchmarkNextFor is the delivery workers' read of the hub: 32 messages
// at a time for an admin, from a window of changes alone and from one
// with a dashboard after every sixteenth change (merged from their ring).
//
//	go test ./broadcast -run '^$' -bench NextFor -benchmem
func BenchmarkNextFor(b *testing.B) {
	for _, every := range []int{0, 16} {
		name := "changes"
		if every > 0 {
			name = fmt.Sprintf("dashboard-every-%d", every)
		}
		b.Run(name, func(b *testing.B) {
			const window = 1 << 16
			h := NewHub(window)
			for i := range window {
				lsn := uint64(i + 1)
				msgs := []*schema.Message{{Pos: schema.Position{LSN: lsn}, Type: "guarantee_update", JSON: []byte(`{}`)}}
				if every > 0 && i%every == 0 {
					msgs = append(msgs, dashMsg(schema.Position{LSN: lsn, Seq: 1}, int64(i%100)))
				}
				h.Publish(msgs)
			}
			admin := &Principal{Role: RoleAdmin}
			var buf [32]entry
			var cur cursors
			msgs := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				n, to, caughtUp, lost, lapped := h.nextFor(cur, buf[:], admin, nil)
				if lost || lapped {
					b.Fatal("lost the window")
				}
				msgs += n
				if cur = to; caughtUp {
					cur = cursors{}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(1, msgs)), "ns/message")
		})
	}
}
