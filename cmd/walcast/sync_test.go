package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// Test (a) of live state: under a steady load of inserts, updates and
// deletes across committees (and one TRUNCATE), clients with different
// tokens sync at random moments, re-sync now and then, and apply changes
// by the version rule, as client.js does. At the end each one holds
// exactly the rows of its scope that SELECT returns, with their latest
// values, and never held a row outside its scope. With the in-process
// bus, with Redis, and from a serve replica (no database connection)
// while capture runs apart.
func TestSyncUnderLoadMatchesTheDatabase(t *testing.T) {
	for _, bus := range []string{"memory", "redis", "serve replica"} {
		t.Run(bus, func(t *testing.T) {
			pg := electionDB(t)
			var r *running
			switch bus {
			case "memory":
				r = startApp(t, testConfig(t, pg.URL()))
			case "redis":
				r = startApp(t, testConfig(t, pg.URL(), "--redis-url", testenv.StartRedis(t).URL()))
			default:
				rd := testenv.StartRedis(t)
				r = startMode(t, cmdCapture, modeConfig(t, cmdCapture, "--database-url", pg.URL(), "--redis-url", rd.URL()))
				r.waitStreaming(t)
				seedEmptyState(t, r)
				r = startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
				testSyncUnderLoad(t, r, pg.URL())
				return
			}
			r.waitStreaming(t)
			seedEmptyState(t, r)
			testSyncUnderLoad(t, r, pg.URL())
		})
	}
}

// seedEmptyState waits until walcast has seeded the live state (it does
// at start, from the slot's snapshot; the tables are empty and no writer
// has started yet).
func seedEmptyState(t *testing.T, r *running) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 60*time.Second, "walcast seeds the live state at start", func() bool {
		st := r.app.State()
		if st == nil {
			return false
		}
		info, err := st.StateInfo(ctx)
		return err == nil && info.Ready && len(info.Tables) > 0
	})
}

func testSyncUnderLoad(t *testing.T, r *running, dbURL string) {
	scopes := []struct {
		name       string
		user       int64
		role       string
		committees []int64
	}{
		{"admin", 1, "admin", nil},
		{"member of committee 2", 20, "user", []int64{2}},
		{"plain user 11", 11, "user", nil},
	}
	w := startChangeWriters(t, dbURL, 2)
	var clients []*syncClient
	var wg sync.WaitGroup
	ctx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	for i := range 6 {
		sc := scopes[i%len(scopes)]
		c := &syncClient{name: fmt.Sprintf("%s #%d", sc.name, i), addr: r.addr, tok: token(t, sc.user, sc.role, sc.committees...),
			user: sc.user, admin: sc.role == "admin", committees: sc.committees, rows: map[string]syncedRow{}}
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Syncs at a random moment of the load, and again later:
			// the last sync of most clients comes after the TRUNCATE,
			// with changes still coming.
			time.Sleep(time.Duration(rand.IntN(4000)) * time.Millisecond)
			c.run(ctx, 1+rand.IntN(2))
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	w.truncateOnce(t)
	time.Sleep(4 * time.Second)
	w.halt()
	t.Logf("writers: %d inserts, %d updates, %d deletes, 1 truncate", w.inserts.Load(), w.updates.Load(), w.deletes.Load())
	if w.inserts.Load() < 100 {
		t.Fatalf("only %d inserts: the load was not steady", w.inserts.Load())
	}

	want := guaranteeRows(t, dbURL)
	// The state's metrics count what it holds (the in-process or Redis
	// bus, whichever this process uses).
	eventually(t, 30*time.Second, "walcast_state_rows equal to the table's rows", func() bool {
		v, ok := metric(t, r.addr, `walcast_state_rows{table="public.guarantee"}`)
		return ok && int(v) == len(want)
	})
	if v, ok := metric(t, r.addr, `walcast_state_bytes{table="public.guarantee"}`); len(want) > 0 && (!ok || v <= 0) {
		t.Errorf("walcast_state_bytes = %v (present %v) with %d rows", v, ok, len(want))
	}
	for _, c := range clients {
		scoped := map[string]string{}
		for k, row := range want {
			if c.sees(row.committee, row.user) {
				scoped[k] = row.text
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for !maps.Equal(c.view(), scoped) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		got := c.view()
		if !maps.Equal(got, scoped) {
			t.Errorf("%s holds %d rows, SELECT gives %d in its scope: %s", c.name, len(got), len(scoped), viewDiff(got, scoped))
		}
		c.mu.Lock()
		t.Logf("%s: %d rows, %d syncs, %d changes applied, %d skipped as older", c.name, len(got), c.syncs, c.applied, c.skipped)
		if len(c.violations) > 0 {
			t.Errorf("%s received rows outside its scope, or a change before its state_end: %v", c.name, c.violations[:min(5, len(c.violations))])
		}
		if c.syncs == 0 {
			t.Errorf("%s never completed a sync", c.name)
		}
		c.mu.Unlock()
	}
	stopClients()
	wg.Wait()
}

// syncedRow is a row as a client holds it.
type syncedRow struct {
	version schema.Position
	data    json.RawMessage
}

// syncClient keeps synced rows of public.guarantee as client.js does: a
// sync's rows replace the table's at state_end, a change applies when its
// id is newer than the row's version, a truncate clears older rows.
type syncClient struct {
	name, addr, tok string
	user            int64
	admin           bool
	committees      []int64

	mu         sync.Mutex
	rows       map[string]syncedRow // by key
	pending    map[string]syncedRow // state frames of the sync under way
	connecting bool                 // connected with ?sync=, before its state_end
	syncs      int
	applied    int
	skipped    int
	violations []string
}

// run connects with ?sync=all, sends resyncs more sync frames at random
// moments, and reconnects with a sync after any drop, until ctx ends.
func (c *syncClient) run(ctx context.Context, resyncs int) {
	for ctx.Err() == nil {
		u := fmt.Sprintf("ws://%s/ws?token=%s&sync=all", c.addr, c.tok)
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, _, err := websocket.Dial(dctx, u, nil)
		cancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		conn.SetReadLimit(16 << 20)
		c.mu.Lock()
		c.connecting = true
		c.mu.Unlock()
		done := make(chan struct{})
		go func() { // re-syncs at random moments, as a page may
			defer close(done)
			for range resyncs {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(300+rand.IntN(1000)) * time.Millisecond):
				}
				conn.Write(ctx, websocket.MessageText, []byte(`{"type":"sync","types":["guarantee_update"]}`))
			}
		}()
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				break
			}
			if c.handle(b) {
				conn.Write(ctx, websocket.MessageText, []byte(`{"type":"sync"}`))
			}
		}
		conn.CloseNow()
		<-done
	}
}

// syncFrame is the part of a frame the client reads.
type syncFrame struct {
	Type, ID, Action, Table, Key string
	OldKey                       string `json:"old_key"`
	Data                         json.RawMessage
	Rows                         []struct {
		Key, Version string
		Data         json.RawMessage
	}
	Tables []string
}

// handle applies one frame; it reports whether the client must sync
// again (resync_required).
func (c *syncClient) handle(b []byte) bool {
	var f syncFrame
	if err := json.Unmarshal(b, &f); err != nil {
		c.violate("bad frame %.100s", b)
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch f.Type {
	case "resync_required":
		return true
	case "state":
		if c.pending == nil {
			c.pending = map[string]syncedRow{}
		}
		for _, r := range f.Rows {
			v, err := schema.ParsePosition(r.Version)
			if err != nil {
				c.violations = append(c.violations, "bad version "+r.Version)
			}
			c.check(r.Data)
			if f.Table == "public.guarantee" {
				c.pending[r.Key] = syncedRow{v, r.Data}
			}
		}
	case "state_end":
		if slices.Contains(f.Tables, "public.guarantee") {
			c.rows = c.pending
			if c.rows == nil {
				c.rows = map[string]syncedRow{}
			}
			c.syncs++
		}
		c.pending = nil
		c.connecting = false
	case schema.TypeGuarantee:
		if c.connecting {
			c.violations = append(c.violations, "a change before the sync's state_end: "+f.ID)
		}
		c.apply(&f)
	}
	return false
}

// apply applies a change by the version rule; c.mu is held.
func (c *syncClient) apply(f *syncFrame) {
	id, err := schema.ParsePosition(f.ID)
	if err != nil {
		c.violations = append(c.violations, "bad id "+f.ID)
		return
	}
	newer := func(key string) bool { r, ok := c.rows[key]; return !ok || r.version.Less(id) }
	switch f.Action {
	case "truncated":
		for k, r := range c.rows {
			if r.version.Less(id) {
				delete(c.rows, k)
			}
		}
	case "deleted":
		if r, ok := c.rows[f.Key]; ok && r.version.Less(id) {
			delete(c.rows, f.Key)
		}
	default:
		c.check(f.Data)
		if !newer(f.Key) {
			c.skipped++
			return
		}
		c.rows[f.Key] = syncedRow{id, f.Data}
		if f.OldKey != "" && newer(f.OldKey) {
			delete(c.rows, f.OldKey)
		}
	}
	c.applied++
}

// check records a row this client may not see; c.mu is held.
func (c *syncClient) check(data json.RawMessage) {
	var row struct {
		Committee int64 `json:"committee_id"`
		User      int64 `json:"user_id"`
	}
	if json.Unmarshal(data, &row) != nil || !c.sees(row.Committee, row.User) {
		c.violations = append(c.violations, string(data))
	}
}

func (c *syncClient) violate(format string, args ...any) {
	c.mu.Lock()
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// sees is the delivery rule for a guarantee row (which always has a
// committee and an owner).
func (c *syncClient) sees(committee, user int64) bool {
	return c.admin || slices.Contains(c.committees, committee) || user == c.user
}

// view returns the client's rows as guaranteeRows gives them.
func (c *syncClient) view() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.rows))
	for k, r := range c.rows {
		var row syncGuaranteeRow
		if err := json.Unmarshal(r.data, &row); err != nil {
			out[k] = "unreadable: " + string(r.data)
			continue
		}
		out[k] = row.String()
	}
	return out
}

// syncGuaranteeRow is the part of a guarantee row the test compares.
type syncGuaranteeRow struct {
	ID        int64  `json:"id"`
	Committee int64  `json:"committee_id"`
	User      int64  `json:"user_id"`
	Status    string `json:"status"`
	Notes     string `json:"notes"`
	Name      string `json:"elector_name"`
}

func (g syncGuaranteeRow) String() string {
	return fmt.Sprintf("%d/%d/%d/%s/%s/%s", g.ID, g.Committee, g.User, g.Status, g.Notes, g.Name)
}

// dbRow is a row of SELECT with its scope.
type dbRow struct {
	committee, user int64
	text            string
}

// guaranteeRows returns the guarantee table by key ("[id]").
func guaranteeRows(t *testing.T, dbURL string) map[string]dbRow {
	t.Helper()
	out := map[string]dbRow{}
	withConn(t, dbURL, time.Minute, func(ctx context.Context, conn *pgx.Conn) {
		rows, err := conn.Query(ctx, `SELECT id, committee_id, user_id, status, notes, elector_name FROM guarantee`)
		if err != nil {
			t.Fatal(err)
		}
		var g syncGuaranteeRow
		if _, err := pgx.ForEachRow(rows, []any{&g.ID, &g.Committee, &g.User, &g.Status, &g.Notes, &g.Name}, func() error {
			out[fmt.Sprintf("[%d]", g.ID)] = dbRow{g.Committee, g.User, g.String()}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	return out
}

func viewDiff(got, want map[string]string) string {
	var d []string
	for k, v := range want {
		if got[k] != v {
			d = append(d, fmt.Sprintf("%s: has %q, SELECT %q", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: has %q, not in SELECT", k, v))
		}
	}
	slices.Sort(d)
	if len(d) > 6 {
		d = append(d[:6], fmt.Sprintf("… %d in all", len(d)))
	}
	return strings.Join(d, "; ")
}

// changeWriters insert, update and delete guarantee rows across the three
// committees and users 10 to 12, each change its own transaction, until
// halted; some updates move a row to another committee and owner.
type changeWriters struct {
	inserts, updates, deletes atomic.Int64
	dbURL                     string
	stop                      context.CancelFunc
	wg                        sync.WaitGroup
	mu                        sync.RWMutex // held for writing by the truncate
}

func startChangeWriters(t *testing.T, dbURL string, n int) *changeWriters {
	ctx, cancel := context.WithCancel(context.Background())
	w := &changeWriters{stop: cancel, dbURL: dbURL}
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(context.Background())
			for seq := 0; ctx.Err() == nil; seq++ {
				w.mu.RLock()
				err := w.change(conn, fmt.Sprintf("w%d-%d", i, seq))
				w.mu.RUnlock()
				if err != nil && ctx.Err() == nil {
					t.Errorf("writer: %v", err)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	t.Cleanup(w.halt)
	return w
}

// change makes one random change, committed on its own; not cancelled
// mid-statement, so that nothing commits after the test read the table.
func (w *changeWriters) change(conn *pgx.Conn, tag string) error {
	ctx := context.Background()
	statuses := []string{"strong", "medium", "weak"}
	var err error
	switch r := rand.IntN(10); {
	case r < 4:
		_, err = conn.Exec(ctx, `INSERT INTO guarantee (committee_id, user_id, elector_name, status) VALUES ($1, $2, $3, $4)`,
			1+rand.IntN(3), 10+rand.IntN(3), tag, statuses[rand.IntN(3)])
		w.inserts.Add(1)
	case r < 7:
		_, err = conn.Exec(ctx, `UPDATE guarantee SET notes = $1, status = $2, updated_at = now()
			WHERE id = (SELECT id FROM guarantee ORDER BY random() LIMIT 1)`, tag, statuses[rand.IntN(3)])
		w.updates.Add(1)
	case r < 8: // moves the row to another committee and owner
		_, err = conn.Exec(ctx, `UPDATE guarantee SET notes = $1, committee_id = $2, user_id = $3
			WHERE id = (SELECT id FROM guarantee ORDER BY random() LIMIT 1)`, tag, 1+rand.IntN(3), 10+rand.IntN(3))
		w.updates.Add(1)
	default:
		_, err = conn.Exec(ctx, `DELETE FROM guarantee WHERE id = (SELECT id FROM guarantee ORDER BY random() LIMIT 1)`)
		w.deletes.Add(1)
	}
	return err
}

// truncateOnce empties the table between the writers' changes.
func (w *changeWriters) truncateOnce(t *testing.T) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, w.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `TRUNCATE guarantee`); err != nil {
		t.Fatal(err)
	}
}

// halt stops the writers and waits for them.
func (w *changeWriters) halt() {
	w.stop()
	w.wg.Wait()
}

// An oversized row keeps its primary key's columns, whatever their names,
// under REPLICA IDENTITY FULL (which flags every column as key): the live
// state can place it, and its frame says which row it is.
func TestOversizedRowKeepsItsPrimaryKey(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE codes (code text PRIMARY KEY, committee_id bigint, user_id bigint, notes text);
		ALTER TABLE codes REPLICA IDENTITY FULL`)
	app := startApp(t, testConfig(t, pg.URL(), "--tables", "guarantee,public.codes=guarantee"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, `INSERT INTO codes VALUES ('c1', 2, 7, repeat('x', 2*1024*1024))`)
	m := c.change(t)
	data, _ := json.Marshal(m["data"])
	if m["oversized"] != true || m["key"] != `["c1"]` || string(data) != `{"code":"c1","committee_id":2,"user_id":7}` {
		t.Fatalf("oversized row of a table keyed by code: key %v, data %s", m["key"], data)
	}
}
