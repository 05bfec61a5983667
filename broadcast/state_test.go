package broadcast

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// stateBus is a bus with live state, as the tests drive it.
type stateBus interface {
	StateStore
	Append(ctx context.Context, msgs []schema.Message) error
	Head(ctx context.Context) (schema.Position, error)
}

// forEachStateBus runs test against the in-process bus and against Redis.
func forEachStateBus(t *testing.T, history, maxRows int, test func(t *testing.T, bus stateBus)) {
	t.Run("memory", func(t *testing.T) {
		bus := NewMemoryBus(history, nil)
		bus.SetStateMaxRows(maxRows)
		bus.SetLogger(discard())
		test(t, bus)
	})
	t.Run("redis", func(t *testing.T) {
		bus, err := NewRedisBus(RedisConfig{URL: testenv.StartRedis(t).URL(), History: history, Logger: discard(), StateMaxRows: maxRows})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		test(t, bus)
	})
}

// forEachStateBusAndCluster is forEachStateBus, then a Redis Cluster (not
// with -short: a cluster takes seconds to start): the scripts touch keys
// they derive from the stream key, which must all live in its slot.
func forEachStateBusAndCluster(t *testing.T, history, maxRows int, test func(t *testing.T, bus stateBus)) {
	forEachStateBus(t, history, maxRows, test)
	t.Run("cluster", func(t *testing.T) {
		bus, err := NewRedisBus(RedisConfig{URL: testenv.StartRedisCluster(t).URL(), History: history, Logger: discard(), StateMaxRows: maxRows})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		test(t, bus)
	})
}

const testTable = "public.g"

// rowMsg returns a change of testTable as the router builds it: op is
// "u" (upsert), "d" (delete) or "c" (truncate).
func rowMsg(pos schema.Position, op, key, data string, committee int64) schema.Message {
	m := schema.Message{Pos: pos, Type: schema.TypeGuarantee, Committee: committee, HasCommittee: committee != 0}
	ref := &schema.RowRef{Table: testTable, Key: key}
	action := "updated"
	switch op {
	case "u":
		ref.Op, ref.Data = schema.RowUpsert, []byte(data)
	case "d":
		ref.Op, action, data = schema.RowDelete, "deleted", `{}`
	case "c":
		ref.Op, ref.Key, action, data = schema.RowClear, "", "truncated", `{}`
	}
	b := fmt.Appendf(nil, `{"id":"%s","type":"guarantee_update","action":"%s","table":"public.g"`, pos, action)
	if ref.Key != "" {
		b = append(b, `,"key":`...)
		b = jsonx.AppendString(b, ref.Key)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	m.JSON = append(b, '}')
	m.Row = ref
	return m
}

// readRows returns the state of tables as key → "version data".
func readRows(t *testing.T, bus StateStore, tables ...string) (map[string]string, schema.Position) {
	t.Helper()
	got := map[string]string{}
	pos, err := bus.ReadState(context.Background(), tables, 7, func(batch []StateRow) error {
		if len(batch) > 7 {
			t.Errorf("batch of %d rows, want at most 7", len(batch))
		}
		for _, r := range batch {
			got[r.Table+" "+r.Key] = r.Version.String() + " " + string(r.Data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, pos
}

func noRows(yield func([]schema.Message) error) error { return nil }

func pos(l uint64) schema.Position { return schema.Position{LSN: l} }

// Appends update the state as they store: upserts, deletes, a key that
// changes, truncate, unchanged TOASTed columns, scope; changes before
// the state is loaded are not applied by Append, and a change older
// than a row's version never overwrites it.
func TestStateFollowsAppends(t *testing.T) {
	forEachStateBusAndCluster(t, 1000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(bus.Append(ctx, []schema.Message{rowMsg(pos(5), "u", "[1]", `{"id":1}`, 3)}))
		if st, err := bus.StateInfo(ctx); err != nil || st.Ready {
			t.Fatalf("before LoadState: %+v, %v; want not ready", st, err)
		}
		must(bus.LoadState(ctx, pos(5), []string{testTable}, func(yield func([]schema.Message) error) error {
			return yield([]schema.Message{rowMsg(pos(5), "u", "[1]", `{"id":1}`, 3)})
		}))
		must(bus.Append(ctx, []schema.Message{
			rowMsg(pos(10), "u", "[2]", `{"id":2,"notes":"long \"text\" {x}","n":[1,{"a":2}]}`, 3),
			rowMsg(pos(11), "u", "[3]", `{"id":3}`, 4),
			rowMsg(pos(12), "d", "[1]", "", 3),
		}))
		// An update that leaves notes unchanged (TOAST), and one that
		// moves row 3 to key 4.
		m := rowMsg(pos(13), "u", "[2]", `{"id":2,"n":2}`, 3)
		m.Row.Unchanged = []string{"notes"}
		moved := rowMsg(pos(14), "u", "[4]", `{"id":4}`, 4)
		moved.Row.OldKey = "[3]"
		must(bus.Append(ctx, []schema.Message{m, moved}))
		got, at := readRows(t, bus)
		want := map[string]string{
			"public.g [2]": `13-0 {"id":2,"n":2,"notes":"long \"text\" {x}"}`,
			"public.g [4]": `14-0 {"id":4}`,
		}
		if !maps.Equal(got, want) || at != pos(14) {
			t.Fatalf("state at %s = %v, want %v at 14-0", at, got, want)
		}
		st, err := bus.StateInfo(ctx)
		must(err)
		g := st.Tables[testTable]
		if !st.Ready || st.Floor != pos(5) || g.Rows != 2 || g.Type != schema.TypeGuarantee || g.Off {
			t.Fatalf("StateInfo = %+v", st)
		}
		if wantBytes := int64(len(`[2]`) + len(`[4]`)); g.Bytes < wantBytes+int64(len(`{"id":4}`)) {
			t.Errorf("bytes = %d, too few for the rows held", g.Bytes)
		}
		must(bus.Append(ctx, []schema.Message{rowMsg(pos(20), "c", "", "", 0), rowMsg(pos(21), "u", "[9]", `{"id":9}`, 0)}))
		got, _ = readRows(t, bus)
		if want := map[string]string{"public.g [9]": `21-0 {"id":9}`}; !maps.Equal(got, want) {
			t.Fatalf("after truncate: %v, want %v", got, want)
		}
		if st, _ := bus.StateInfo(ctx); st.Tables[testTable].Rows != 1 || st.Tables[testTable].Bytes != int64(len(`[9]`)+len(`{"id":9}`)) && isMemory(bus) {
			t.Errorf("after truncate: %+v", st.Tables[testTable])
		}
	})
}

func isMemory(bus stateBus) bool { _, ok := bus.(*MemoryBus); return ok }

// The scope of a row is its latest change's.
func TestStateRowScope(t *testing.T) {
	forEachStateBus(t, 100, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		m := rowMsg(pos(3), "u", "[1]", `{"id":1}`, 0)
		m.Owner, m.HasOwner, m.AdminOnly = 12, true, true
		if err := bus.Append(ctx, []schema.Message{rowMsg(pos(2), "u", "[1]", `{"id":1}`, 7), m}); err != nil {
			t.Fatal(err)
		}
		var rows []StateRow
		if _, err := bus.ReadState(ctx, nil, 10, func(b []StateRow) error { rows = append(rows, b...); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].HasCommittee || !rows[0].HasOwner || rows[0].Owner != 12 || !rows[0].AdminOnly || rows[0].Type != schema.TypeGuarantee {
			t.Fatalf("rows = %+v", rows)
		}
	})
}

// LoadState applies the stream's changes after the snapshot and none
// before it, and a row of the snapshot newer than a change keeps its
// version.
func TestStateLoadReplaysAfterFloor(t *testing.T) {
	forEachStateBus(t, 1000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		var all []schema.Message
		for l := uint64(1); l <= 20; l++ {
			all = append(all, rowMsg(pos(l), "u", fmt.Sprintf("[%d]", l%4), fmt.Sprintf(`{"v":%d}`, l), 1))
		}
		all = append(all, rowMsg(pos(21), "d", "[1]", "", 1))
		if err := bus.Append(ctx, all); err != nil {
			t.Fatal(err)
		}
		// The snapshot at 10: keys 0..3 as of then (versions are the
		// snapshot's position).
		snap := []schema.Message{
			rowMsg(pos(10), "u", "[0]", `{"v":8}`, 1), rowMsg(pos(10), "u", "[1]", `{"v":9}`, 1),
			rowMsg(pos(10), "u", "[2]", `{"v":10}`, 1), rowMsg(pos(10), "u", "[3]", `{"v":7}`, 1),
		}
		err := bus.LoadState(ctx, pos(10), []string{testTable}, func(yield func([]schema.Message) error) error {
			if err := yield(snap[:2]); err != nil {
				return err
			}
			return yield(snap[2:])
		})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := readRows(t, bus)
		want := map[string]string{
			"public.g [0]": `20-0 {"v":20}`, "public.g [2]": `18-0 {"v":18}`, "public.g [3]": `19-0 {"v":19}`,
		}
		if !maps.Equal(got, want) {
			t.Fatalf("state = %v, want %v", got, want)
		}
	})
}

// A LoadState while appends go on ends with the state the appends make,
// whenever the snapshot was taken: right after it returns, with the
// writer stopped, the state equals the table.
func TestStateLoadWhileAppending(t *testing.T) {
	forEachStateBusAndCluster(t, 100000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		w := newChangeWriter(2000)
		for round := range 4 {
			var mu sync.Mutex // w, between the writer and the snapshot
			stop := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				for {
					select {
					case <-stop:
						done <- nil
						return
					default:
					}
					mu.Lock()
					batch := w.next(rand.IntN(20) + 1)
					err := bus.Append(ctx, batch)
					mu.Unlock()
					if err != nil {
						done <- err
						return
					}
				}
			}()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			at, snap := w.snapshot()
			mu.Unlock()
			err := bus.LoadState(ctx, at, []string{testTable}, func(yield func([]schema.Message) error) error {
				for len(snap) > 0 {
					time.Sleep(time.Millisecond) // let the writer move on
					n := min(len(snap), 300)
					if err := yield(snap[:n]); err != nil {
						return err
					}
					snap = snap[n:]
				}
				return nil
			})
			close(stop)
			if werr := <-done; werr != nil {
				t.Fatal(werr)
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := readRows(t, bus)
			if want := w.rows(); !maps.EqualFunc(got, want, sameRow) {
				t.Fatalf("round %d: state has %d rows, want %d; differences: %s", round, len(got), len(want), mapDiff(got, want))
			}
		}
	})
}

// changeWriter makes random changes to testTable and keeps the table they
// make.
type changeWriter struct {
	keys  int
	lsn   uint64
	table map[string]schema.Message // the latest upsert of each row
}

func newChangeWriter(keys int) *changeWriter {
	return &changeWriter{keys: keys, table: map[string]schema.Message{}}
}

func (w *changeWriter) next(n int) []schema.Message {
	w.lsn++
	out := make([]schema.Message, 0, n)
	for i := range n {
		p := schema.Position{LSN: w.lsn, Seq: uint64(i)}
		key := fmt.Sprintf("[%d]", rand.IntN(w.keys))
		switch r := rand.IntN(100); {
		case r == 0 && rand.IntN(50) == 0:
			out = append(out, rowMsg(p, "c", "", "", 0))
			clear(w.table)
		case r < 25:
			out = append(out, rowMsg(p, "d", key, "", 1))
			delete(w.table, key)
		default:
			m := rowMsg(p, "u", key, fmt.Sprintf(`{"k":%s,"at":"%s"}`, key, p), 1)
			out = append(out, m)
			w.table[key] = m
		}
	}
	return out
}

// snapshot returns the table as a snapshot at the newest change sees it.
func (w *changeWriter) snapshot() (schema.Position, []schema.Message) {
	at := schema.Position{LSN: w.lsn, Seq: 1 << 20}
	var snap []schema.Message
	for _, m := range w.table {
		snap = append(snap, rowMsg(at, "u", m.Row.Key, string(m.Row.Data), 1))
	}
	return at, snap
}

// rows returns the table as readRows reports it.
func (w *changeWriter) rows() map[string]string {
	out := map[string]string{}
	for k, m := range w.table {
		out[testTable+" "+k] = m.Pos.String() + " " + string(m.Row.Data)
	}
	return out
}

// sameRow compares rows as readRows reports them: the same data, and a
// version at least the latest change's (a row the snapshot holds has
// the snapshot's position as its version).
func sameRow(got, want string) bool {
	gv, gd, _ := strings.Cut(got, " ")
	wv, wd, _ := strings.Cut(want, " ")
	g, err1 := schema.ParsePosition(gv)
	w, err2 := schema.ParsePosition(wv)
	return err1 == nil && err2 == nil && gd == wd && !g.Less(w)
}

func mapDiff(got, want map[string]string) string {
	var d []string
	for k, v := range want {
		if !sameRow(got[k], v) {
			d = append(d, fmt.Sprintf("%s: got %q want %q", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: got %q, not in the table", k, v))
		}
	}
	if len(d) > 5 {
		d = append(d[:5], "…")
	}
	return strings.Join(d, "; ")
}

// A table above --state-max-rows is dropped and off, with the fix;
// another LoadState brings it back.
func TestStateLimitTurnsTableOff(t *testing.T) {
	forEachStateBus(t, 1000, 3, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		var batch []schema.Message
		for l := uint64(1); l <= 4; l++ {
			batch = append(batch, rowMsg(pos(l), "u", fmt.Sprintf("[%d]", l), `{}`, 0))
		}
		if err := bus.Append(ctx, batch[:3]); err != nil {
			t.Fatal(err)
		}
		if st, _ := bus.StateInfo(ctx); st.Tables[testTable].Off || st.Tables[testTable].Rows != 3 {
			t.Fatalf("at the limit: %+v", st.Tables[testTable])
		}
		if err := bus.Append(ctx, batch[3:]); err != nil {
			t.Fatal(err)
		}
		st, _ := bus.StateInfo(ctx)
		g := st.Tables[testTable]
		if !g.Off || g.Rows != 0 || !strings.Contains(g.Reason, "--state-max-rows") || !strings.Contains(g.Reason, "walcast state rebuild") {
			t.Fatalf("above the limit: %+v", g)
		}
		if got, _ := readRows(t, bus); len(got) != 0 {
			t.Fatalf("an off table's rows are still read: %v", got)
		}
		// A later change leaves it off.
		if err := bus.Append(ctx, []schema.Message{rowMsg(pos(9), "d", "[1]", "", 0)}); err != nil {
			t.Fatal(err)
		}
		if st, _ := bus.StateInfo(ctx); !st.Tables[testTable].Off {
			t.Fatalf("a change turned it on again: %+v", st.Tables[testTable])
		}
	})
}

// A new epoch deletes the state: it describes the old database.
func TestStateDroppedByNewEpoch(t *testing.T) {
	forEachStateBusAndCluster(t, 1000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		if err := bus.Append(ctx, []schema.Message{rowMsg(pos(1), "u", "[1]", `{}`, 0)}); err != nil {
			t.Fatal(err)
		}
		epoch := bus.(interface {
			NewEpoch(context.Context, schema.Origin, string) error
		})
		if err := epoch.NewEpoch(ctx, schema.Origin{SystemID: "2"}, "test"); err != nil {
			t.Fatal(err)
		}
		st, err := bus.StateInfo(ctx)
		if err != nil || st.Ready || len(st.Tables) != 0 {
			t.Fatalf("after a new epoch: %+v, %v", st, err)
		}
		if got, _ := readRows(t, bus, testTable); len(got) != 0 {
			t.Fatalf("rows after a new epoch: %v", got)
		}
	})
}

// LoadState refuses a snapshot older than what the stream still holds.
func TestStateLoadRefusesTrimmedHistory(t *testing.T) {
	forEachStateBus(t, 10, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		for l := uint64(1); l <= 400; l++ {
			if err := bus.Append(ctx, []schema.Message{rowMsg(pos(l), "u", "[1]", `{}`, 0)}); err != nil {
				t.Fatal(err)
			}
		}
		err := bus.LoadState(ctx, pos(2), []string{testTable}, noRows)
		if !errors.Is(err, ErrStateGap) {
			t.Fatalf("LoadState at a trimmed position: %v, want ErrStateGap", err)
		}
		if err := bus.LoadState(ctx, pos(400), []string{testTable}, noRows); err != nil {
			t.Fatalf("LoadState at the head: %v", err)
		}
	})
}

// The Redis scripts merge unchanged (TOASTed) columns exactly as
// schema.MergeUnchanged does in process.
func TestStateMergesUnchangedAsGo(t *testing.T) {
	cases := []struct{ prev, next string }{
		{`{"id":1,"notes":"big \"one\", {x}","n":1}`, `{"id":1,"n":2}`},
		{`{"id":1,"j":{"notes":1},"notes":[1,{"a":"]"}]}`, `{"id":1}`},
		{`{"id":1}`, `{"id":1}`},
		{`{"id":1,"notes":"a","body":"\\\\"}`, `{}`},
		{`{"vote_count":{"id":9,"notes":"a"},"committee_id":1}`, `{"vote_count":{"id":9},"committee_id":2}`},
		{`{"s":"notes","notes":null}`, `{"s":"x"}`},
	}
	forEachStateBus(t, 100, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			key := fmt.Sprintf("[%d]", i)
			next := rowMsg(pos(uint64(10*i+2)), "u", key, c.next, 0)
			next.Row.Unchanged = []string{"notes", "body"}
			if err := bus.Append(ctx, []schema.Message{rowMsg(pos(uint64(10*i+1)), "u", key, c.prev, 0), next}); err != nil {
				t.Fatal(err)
			}
			got, _ := readRows(t, bus)
			want := string(schema.MergeUnchanged([]byte(c.prev), []byte(c.next), []string{"notes", "body"}))
			if _, data, _ := strings.Cut(got[testTable+" "+key], " "); data != want {
				t.Errorf("merge of %s and %s = %s, want %s", c.prev, c.next, data, want)
			}
		}
	})
}

// State and stream move together: whenever ReadState runs during appends,
// the rows reflect every change up to the position it returns (here
// every change writes one row, so its version is at least the position).
func TestStateReadIsConsistentWithItsPosition(t *testing.T) {
	forEachStateBus(t, 100000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for l := uint64(1); ; l++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				batch := []schema.Message{rowMsg(pos(l), "u", "[1]", fmt.Sprintf(`{"v":%d}`, l), 0)}
				if err := bus.Append(ctx, batch); err != nil {
					done <- err
					return
				}
			}
		}()
		defer func() {
			close(stop)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}()
		for range 300 {
			var version schema.Position
			at, err := bus.ReadState(ctx, nil, 10, func(b []StateRow) error {
				version = b[0].Version
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !at.IsZero() && version.Less(at) {
				t.Fatalf("ReadState says its rows reflect %s, but the row is at %s", at, version)
			}
		}
	})
}

// --state-max-rows 0 (a negative setting here) disables live state:
// LoadState says so, and appends keep none.
func TestStateDisabled(t *testing.T) {
	forEachStateBus(t, 100, -1, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err == nil || !strings.Contains(err.Error(), "disabled") {
			t.Fatalf("LoadState with state disabled: %v", err)
		}
		if err := bus.Append(ctx, []schema.Message{rowMsg(pos(1), "u", "[1]", `{}`, 0)}); err != nil {
			t.Fatal(err)
		}
		if st, err := bus.StateInfo(ctx); err != nil || st.Ready || len(st.Tables) != 0 {
			t.Fatalf("StateInfo with state disabled: %+v, %v", st, err)
		}
	})
}

// Two loads at once (a rebuild while capture seeds) do not mix: the state
// ends as one of the snapshots, whole. With Redis, no staging key is
// left behind and the live rows do not expire.
func TestStateLoadsAtOnceDoNotMix(t *testing.T) {
	forEachStateBusAndCluster(t, 1000, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		snapshot := func(tag string, from int) func(func([]schema.Message) error) error {
			return func(yield func([]schema.Message) error) error {
				for i := range 10 {
					var batch []schema.Message
					for k := from + 20*i; k < from+20*(i+1); k++ {
						batch = append(batch, rowMsg(pos(5), "u", fmt.Sprintf("[%d]", k), fmt.Sprintf(`{"s":%q}`, tag), 0))
					}
					if err := yield(batch); err != nil {
						return err
					}
					time.Sleep(time.Millisecond)
				}
				return nil
			}
		}
		var wg sync.WaitGroup
		for _, s := range []struct {
			tag  string
			from int
		}{{"a", 0}, {"b", 1000}} {
			wg.Go(func() {
				if err := bus.LoadState(ctx, pos(5), []string{testTable}, snapshot(s.tag, s.from)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got, _ := readRows(t, bus)
		tags := map[string]int{}
		for _, v := range got {
			tags[v[strings.Index(v, `"s":`):]]++
		}
		if len(got) != 200 || len(tags) != 1 {
			t.Fatalf("state after two loads: %d rows, of snapshots %v; want the 200 rows of one", len(got), tags)
		}
		if rb, ok := bus.(*RedisBus); ok {
			if ttl, err := rb.rdb.TTL(ctx, rowsKey(rb.stateKey(), testTable)).Result(); err != nil || ttl != -1 {
				t.Errorf("TTL of the live rows = %v, %v; want none (-1)", ttl, err)
			}
			if keys, err := rb.rdb.Keys(ctx, "*:state:stage*").Result(); err != nil || len(keys) != 0 {
				t.Errorf("staging keys left: %v, %v", keys, err)
			}
		}
	})
}

// A row too large to send whole is kept as sent (key and routing columns)
// and marked, so that a sync tells clients to refetch it; its next change
// of normal size clears the mark.
func TestStateMarksOversizedRows(t *testing.T) {
	forEachStateBus(t, 100, 0, func(t *testing.T, bus stateBus) {
		ctx := context.Background()
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		big := rowMsg(pos(1), "u", "[1]", `{"id":1}`, 3)
		big.Row.Oversized = true
		if err := bus.Append(ctx, []schema.Message{big}); err != nil {
			t.Fatal(err)
		}
		read := func() StateRow {
			var rows []StateRow
			if _, err := bus.ReadState(ctx, nil, 10, func(b []StateRow) error { rows = append(rows, b...); return nil }); err != nil || len(rows) != 1 {
				t.Fatalf("ReadState: %v, %v", rows, err)
			}
			return rows[0]
		}
		if r := read(); !r.Oversized || r.AdminOnly || !r.HasCommittee {
			t.Fatalf("oversized row read back as %+v", r)
		}
		// Rebuilt from the stream, it is still marked.
		if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
			t.Fatal(err)
		}
		if r := read(); !r.Oversized || string(r.Data) != `{"id":1}` {
			t.Fatalf("oversized row replayed from the stream: %+v", r)
		}
		if frame := string(encodeStateRow(&StateRow{Key: "[1]", Data: []byte(`{"id":1}`), Oversized: true})); !strings.Contains(frame, `"oversized":true`) {
			t.Errorf("state frame row %s does not say oversized", frame)
		}
		if err := bus.Append(ctx, []schema.Message{rowMsg(pos(2), "u", "[1]", `{"id":1,"notes":"x"}`, 3)}); err != nil {
			t.Fatal(err)
		}
		if r := read(); r.Oversized {
			t.Fatalf("a normal change left the mark: %+v", r)
		}
	})
}
