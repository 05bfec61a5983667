package broadcast

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// syncServer is a test server whose in-process bus keeps state of
// testTable, holding rows of several scopes.
func syncServer(t *testing.T) *testServer {
	t.Helper()
	hub := NewHub(1000)
	bus := NewMemoryBus(1000, hub)
	bus.SetLogger(discard())
	_, url := startServer(t, ServerConfig{Hub: hub, History: bus, State: bus,
		StateTables: map[string]string{testTable: schema.TypeGuarantee, "public.x": schema.TypeAttendance}})
	ctx := context.Background()
	if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
		t.Fatal(err)
	}
	rows := []schema.Message{
		rowMsg(pos(1), "u", "[1]", `{"id":1}`, 1),
		rowMsg(pos(2), "u", "[2]", `{"id":2}`, 2),
		rowMsg(pos(3), "u", "[3]", `{"id":3}`, 0), // election-wide
		rowMsg(pos(4), "u", "[4]", `{"id":4}`, 2),
		rowMsg(pos(5), "u", "[5]", `{"id":5}`, 0),
		rowMsg(pos(6), "u", "[1]", `{"id":1,"v":2}`, 1),
		rowMsg(pos(7), "d", "[2]", "", 2),
	}
	rows[3].Owner, rows[3].HasOwner = 12, true // committee 2, but the user's own
	rows[4].AdminOnly = true
	if err := bus.Append(ctx, rows); err != nil {
		t.Fatal(err)
	}
	return &testServer{url: url, bus: bus, hub: hub, seq: 100}
}

// readSync reads state frames up to state_end; it returns the rows
// received (key → data), the tables and the unavailable ones.
func (c *wsc) readSync() (rows map[string]string, end map[string]any) {
	c.t.Helper()
	rows = map[string]string{}
	for {
		f := c.read()
		switch f["type"] {
		case "state":
			if f["table"] != testTable || f["message_type"] != schema.TypeGuarantee {
				c.t.Fatalf("state frame %v", f)
			}
			for _, r := range f["rows"].([]any) {
				r := r.(map[string]any)
				rows[r["key"].(string)] = fmt.Sprint(r["version"], " ", r["data"])
			}
		case "state_end":
			return rows, f
		case "subscribed", "dashboard_update":
		default:
			c.t.Fatalf("frame %v during a sync", f)
		}
	}
}

func rowKeys(rows map[string]string) string { return strings.Join(slices.Sorted(maps.Keys(rows)), " ") }

// A sync sends the rows the token allows (committee, owner,
// election-wide; never admin-only or another committee's), the
// subscription narrows them, state_end names the tables sent and those
// without state, and the changes after its position follow.
func TestSyncSendsScopedStateThenChanges(t *testing.T) {
	s := syncServer(t)
	user := connect(t, s, mint(t, 12, "user", 1), "")
	user.send(`{"type":"sync"}`)
	rows, end := user.readSync()
	if got := rowKeys(rows); got != "[1] [3] [4]" {
		t.Fatalf("user's rows: %s, want [1] [3] [4]", got)
	}
	if rows["[1]"] != "6-0 map[id:1 v:2]" {
		t.Errorf("row [1] = %s, want its latest version", rows["[1]"])
	}
	if end["position"] != "7-0" || fmt.Sprint(end["tables"]) != "[public.g]" || !strings.Contains(fmt.Sprint(end["unavailable"]), "public.x") {
		t.Fatalf("state_end = %v", end)
	}
	p := s.publishMsg(t, rowMsg(pos(200), "u", "[9]", `{"id":9}`, 1), "")
	if f := user.read(); f["id"] != p {
		t.Fatalf("after state_end: %v, want the change %s", f, p)
	}

	admin := connect(t, s, mint(t, 1, "admin"), "")
	admin.send(`{"type":"sync","committees":[2]}`)
	if rows, _ := admin.readSync(); rowKeys(rows) != "[3] [4] [5]" {
		t.Errorf("admin's rows narrowed to committee 2: %s, want [3] [4] [5]", rowKeys(rows))
	}
	// A subscription to other types sends no rows of this table.
	admin.send(`{"type":"sync","types":["attendance_update"]}`)
	rows, end = admin.readSync()
	if len(rows) != 0 || fmt.Sprint(end["tables"]) != "[]" || !strings.Contains(fmt.Sprint(end["unavailable"]), "public.x") {
		t.Errorf("sync of attendance_update: rows %v, end %v", rows, end)
	}
}

// ?sync= at connect syncs after the welcome; a bad type is a 400.
func TestSyncAtConnect(t *testing.T) {
	s := syncServer(t)
	c := connect(t, s, mint(t, 12, "user", 1), "sync=guarantee_update")
	if rows, end := c.readSync(); rowKeys(rows) != "[1] [3] [4]" || end["position"] != "7-0" {
		t.Fatalf("sync at connect: %v %v", rows, end)
	}
	admin := connect(t, s, mint(t, 1, "admin"), "sync=all&committees=2")
	if rows, _ := admin.readSync(); rowKeys(rows) != "[3] [4] [5]" {
		t.Errorf("sync=all&committees=2 for an admin: %s, want [3] [4] [5]", rowKeys(rows))
	}
	if _, err := dialWS(t, s.url, mint(t, 12, "user", 1), "sync=nope"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("sync=nope: %v, want HTTP 400", err)
	}
}

// Sync frames are rate limited; the connection stays open.
func TestSyncIsRateLimited(t *testing.T) {
	s := syncServer(t)
	c := connect(t, s, mint(t, 1, "admin"), "")
	limited := false
	for range 5 {
		c.send(`{"type":"sync"}`)
	}
	for syncs := 0; syncs < 5 && !limited; {
		f := c.read()
		switch f["type"] {
		case "state_end":
			syncs++
		case "error":
			limited = f["code"] == "rate_limited"
		}
	}
	if !limited {
		t.Fatal("5 syncs at once were all served")
	}
	c.send(`{"type":"ping"}`)
	for f := c.read(); f["type"] != "pong"; f = c.read() {
	}
}

// countingState counts the reads of a state.
type countingState struct {
	StateStore
	reads atomic.Int64
}

func (c *countingState) ReadState(ctx context.Context, tables []string, n int, fn func([]StateRow) error) (schema.Position, error) {
	c.reads.Add(1)
	return c.StateStore.ReadState(ctx, tables, n, fn)
}

// Syncs that start together share one read of the state; a connection
// already sent changes past a read's position gets a fresh one.
func TestSyncsShareReads(t *testing.T) {
	bus := NewMemoryBus(100, nil)
	ctx := context.Background()
	if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
		t.Fatal(err)
	}
	if err := bus.Append(ctx, []schema.Message{rowMsg(pos(1), "u", "[1]", `{}`, 0)}); err != nil {
		t.Fatal(err)
	}
	store := &countingState{StateStore: bus}
	reads := stateReads{store: store}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if r, err := reads.get(ctx, schema.Position{}); err != nil || len(r.rows) != 1 || r.pos != pos(1) {
				t.Errorf("shared read: %+v, %v", r, err)
			}
		})
	}
	wg.Wait()
	if n := store.reads.Load(); n != 1 {
		t.Errorf("50 syncs at once read the state %d times, want once", n)
	}
	if err := bus.Append(ctx, []schema.Message{rowMsg(pos(2), "u", "[2]", `{}`, 0)}); err != nil {
		t.Fatal(err)
	}
	if r, err := reads.get(ctx, pos(2)); err != nil || r.pos != pos(2) || len(r.rows) != 2 {
		t.Fatalf("a read for a connection at 2-0: %+v, %v", r, err)
	}
}

// movedRow is an update of row [7] from committee 3 to committee 2 (owner
// 12 both times), as the router makes it.
func movedRow(p schema.Position) schema.Message {
	m := rowMsg(p, "u", "[7]", `{"id":7,"committee_id":2,"user_id":12}`, 2)
	m.Owner, m.HasOwner = 12, true
	m.Left = &schema.Scope{Committee: 3, HasCommittee: true, Owner: 12, HasOwner: true}
	m.LeftJSON = fmt.Appendf(nil, `{"id":"%s","type":"guarantee_update","action":"deleted","table":"public.g","key":"[7]","data":{"id":7,"committee_id":3,"user_id":12},"left":true}`, p)
	return m
}

// A row moved to another committee reaches the new committee as the
// update, and the old one as its removal ("left"); an admin and the
// owner, who see both, get the update; others get nothing.
func TestMovedRowLeavesItsOldScope(t *testing.T) {
	s := newTestServer(t, 100)
	tokens := map[string]string{
		"old committee": mint(t, 20, "user", 3), "new committee": mint(t, 21, "user", 2),
		"admin": mint(t, 1, "admin"), "owner": mint(t, 12, "user"), "other": mint(t, 22, "user", 1),
	}
	conns := map[string]*wsc{}
	for name, tok := range tokens {
		conns[name] = connect(t, s, tok, "")
	}
	if err := s.bus.Append(context.Background(), []schema.Message{movedRow(pos(50))}); err != nil {
		t.Fatal(err)
	}
	marker := s.publish(t, schema.TypeGuarantee, 0, 0) // election-wide: everyone
	for name, c := range conns {
		f := c.read()
		switch name {
		case "old committee":
			if f["action"] != "deleted" || f["left"] != true || f["key"] != "[7]" {
				t.Errorf("%s got %v, want the row's removal", name, f)
			}
		case "other":
			if f["id"] != marker.String() {
				t.Errorf("%s got %v, want nothing of the row", name, f)
			}
			continue
		default:
			if f["action"] != "updated" {
				t.Errorf("%s got %v, want the update", name, f)
			}
		}
		if f := c.read(); f["id"] != marker.String() {
			t.Errorf("%s: then %v", name, f)
		}
	}
	// A resume from history picks the same frames.
	old := connect(t, s, tokens["old committee"], "since=0-0")
	if f := old.read(); f["left"] != true {
		t.Errorf("replay to the old committee: %v, want the removal", f)
	}
}

// The Redis stream keeps what a moved row's old scope receives.
func TestRedisKeepsTheScopeARowLeft(t *testing.T) {
	bus := newTestRedisBus(t, testenv.StartRedis(t).URL(), 100)
	want := movedRow(pos(50))
	if err := bus.Append(context.Background(), []schema.Message{want}); err != nil {
		t.Fatal(err)
	}
	got, err := bus.Since(context.Background(), schema.Position{}, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Since: %v, %v", got, err)
	}
	if got[0].Left == nil || *got[0].Left != *want.Left || string(got[0].LeftJSON) != string(want.LeftJSON) {
		t.Fatalf("read back Left %+v %s, want %+v %s", got[0].Left, got[0].LeftJSON, want.Left, want.LeftJSON)
	}
}
