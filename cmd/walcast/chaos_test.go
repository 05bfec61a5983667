package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/testenv"
)

// kill9 kills the process without warning, as a crash would.
func (p *process) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for Cleanup
}

// resumingClient reads from walcast like client.js does: it reconnects
// after every drop and resumes from the last id it saw.
type resumingClient struct {
	addr, tok string

	mu      sync.Mutex
	last    string
	ids     map[string]int
	names   map[string]int
	resyncs int
	drops   int
}

func (c *resumingClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		u := fmt.Sprintf("ws://%s/ws?token=%s", c.addr, c.tok)
		c.mu.Lock()
		if c.last != "" {
			u += "&since=" + c.last
		}
		c.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, _, err := websocket.Dial(dctx, u, nil)
		cancel()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		conn.SetReadLimit(1 << 20)
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				break
			}
			var m struct {
				ID, Type, Position string
				Data               struct {
					ElectorName string `json:"elector_name"`
				}
			}
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			c.mu.Lock()
			switch m.Type {
			case "resync_required":
				c.resyncs++
				if m.Position != "" {
					// Ids continue from where walcast says (client.js).
					c.last = m.Position
				}
			case "guarantee_update":
				c.ids[m.ID]++
				c.names[m.Data.ElectorName]++
				c.last = m.ID
			}
			c.mu.Unlock()
		}
		conn.CloseNow()
		c.mu.Lock()
		c.drops++
		c.mu.Unlock()
	}
}

// startResumingClient starts a resumingClient of walcast at addr as an
// admin; stop ends it and waits for it.
func startResumingClient(t *testing.T, addr string) (c *resumingClient, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c = &resumingClient{addr: addr, tok: token(t, 1, "admin"), ids: map[string]int{}, names: map[string]int{}}
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return c, stop
}

// received waits up to d until the client received n rows, and reports
// whether it did.
func (c *resumingClient) received(n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		got := len(c.names)
		c.mu.Unlock()
		if got >= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// electorNames returns the elector_name of every guarantee row.
func electorNames(t *testing.T, dbURL string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	r, err := conn.Query(ctx, `SELECT elector_name FROM guarantee`)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for r.Next() {
		var name string
		if err := r.Scan(&name); err != nil {
			t.Fatal(err)
		}
		rows[name] = true
	}
	return rows
}

// rowWriter commits one guarantee row per transaction, elector names w0,
// w1, ..., pausing between them, reconnecting through every fault, until
// halted.
type rowWriter struct {
	written, failed atomic.Int64
	next            atomic.Int64 // the number of the next row's name
	stop            context.CancelFunc
	done            chan struct{}
}

// startRowWriter starts a rowWriter on the database at dbURL; logf, when
// not nil, logs its write errors. The test's cleanup halts it.
func startRowWriter(t *testing.T, dbURL string, pause time.Duration, logf func(string, ...any)) *rowWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &rowWriter{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for n := 0; ctx.Err() == nil; n++ {
			w.next.Store(int64(n))
			if conn == nil {
				c, err := pgx.Connect(ctx, dbURL)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				conn = c
			}
			// Not cancelled mid-statement: a cancelled INSERT may still
			// commit after the test has read the table.
			if _, err := conn.Exec(context.Background(), `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1 + $1 % 3, 1, 'w' || $1)`, n); err != nil {
				w.failed.Add(1)
				if logf != nil && ctx.Err() == nil {
					logf("writer: %v", err)
				}
				conn.Close(context.Background())
				conn = nil
				continue
			}
			w.written.Add(1)
			time.Sleep(pause)
		}
	}()
	t.Cleanup(w.halt)
	return w
}

// halt stops the writer and waits for it.
func (w *rowWriter) halt() {
	w.stop()
	<-w.done
}

// Under a steady write load of small transactions, walcast is killed with
// SIGKILL three times, Redis (with AOF) once, and PostgreSQL is restarted;
// a client that resumes with its last id after each drop ends with every
// committed row exactly once and no id twice.
func TestCrashesLoseNothingAndDuplicateNothing(t *testing.T) {
	waitsMostly(t)
	pg := electionDB(t)
	rd := testenv.StartRedis(t, testenv.WithAOF())
	port := testenv.FreePort(t)
	args := []string{"--redis-url", rd.URL()}
	p := startProcess(t, pg.URL(), port, args...)
	p.waitReady(t)
	client, stopClient := startResumingClient(t, p.addr)
	writer := startRowWriter(t, pg.URL(), 2*time.Millisecond, nil)
	steady := func() { time.Sleep(700 * time.Millisecond) }

	steady()
	for i := 0; i < 3; i++ {
		p.kill9(t)
		steady() // writes go on while walcast is down
		p = startProcess(t, pg.URL(), port, args...)
		steady()
	}
	rd.Kill(t)
	steady()
	rd.Start(t)
	steady()
	pg.Kill(t)
	pg.Start(t)
	steady()
	writer.halt()

	// Every row the database has must arrive exactly once.
	rows := electorNames(t, pg.URL())
	client.received(len(rows), 30*time.Second)
	stopClient()

	client.mu.Lock()
	defer client.mu.Unlock()
	t.Logf("%d rows committed (%d writes failed during faults), %d messages received, %d reconnects, %d resyncs",
		len(rows), writer.failed.Load(), len(client.ids), client.drops, client.resyncs)
	if len(rows) < 500 {
		t.Errorf("only %d rows written: the load was not steady", len(rows))
	}
	client.checkExactlyOnce(t, rows)
}

// checkExactlyOnce asserts that the client received every row of the
// database exactly once, nothing else, no id twice and no resync; c.mu is
// held by the caller.
func (c *resumingClient) checkExactlyOnce(t *testing.T, rows map[string]bool) {
	t.Helper()
	var missing, extra, dupNames, dupIDs []string
	for name := range rows {
		if c.names[name] == 0 {
			missing = append(missing, name)
		}
	}
	for name, n := range c.names {
		if !rows[name] {
			extra = append(extra, name)
		}
		if n > 1 {
			dupNames = append(dupNames, name)
		}
	}
	for id, n := range c.ids {
		if n > 1 {
			dupIDs = append(dupIDs, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d committed rows never delivered, e.g. %v", len(missing), first(missing))
	}
	if len(extra) > 0 {
		t.Errorf("%d delivered rows not in the database (rolled back?), e.g. %v", len(extra), first(extra))
	}
	if len(dupNames) > 0 || len(dupIDs) > 0 {
		t.Errorf("duplicates: %d rows, %d ids, e.g. %v %v", len(dupNames), len(dupIDs), first(dupNames), first(dupIDs))
	}
	if c.resyncs > 0 {
		t.Errorf("%d resync_required: history should cover every drop", c.resyncs)
	}
}

func first(s []string) string {
	if len(s) > 5 {
		s = s[:5]
	}
	return strings.Join(s, ", ")
}
