package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// sigterm sends SIGTERM and returns how long the process took to exit,
// failing unless it exits cleanly within 10 s.
func (p *process) sigterm(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		took := time.Since(start)
		p.done <- nil // for Cleanup
		if err != nil {
			t.Fatalf("walcast exited with %v after SIGTERM:\n%s", err, p.out.String())
		}
		return took
	case <-time.After(10 * time.Second):
		t.Fatalf("walcast did not exit within 10 s of SIGTERM:\n%s", p.out.String())
	}
	return 0
}

// loadWriter commits rows to guarantee until stopped: one writer commits
// one row per transaction, another 25 rows per transaction, so SIGTERM
// finds transactions of both sizes in flight. Every row has a unique
// elector_name.
//
// halt lets each writer finish its statement rather than cancelling it: a
// cancelled statement may still commit on the server after the client gave
// up, and then be missing from a check that reads the table right away.
type loadWriter struct {
	committed atomic.Int64
	stopped   atomic.Bool
	wg        sync.WaitGroup
}

func startLoad(t *testing.T, dbURL string) *loadWriter {
	t.Helper()
	w := &loadWriter{}
	ctx := context.Background()
	for _, size := range []int{1, 25} {
		w.wg.Go(func() {
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(ctx)
			for n := 0; !w.stopped.Load(); n++ {
				_, err := conn.Exec(ctx, `INSERT INTO guarantee (committee_id, user_id, elector_name)
					SELECT 1 + g % 3, 1, $1 || '-' || $2::int || '-' || g FROM generate_series(1, $3::int) g`, fmt.Sprint(size), n, size)
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
				w.committed.Add(int64(size))
				time.Sleep(time.Millisecond)
			}
		})
	}
	t.Cleanup(w.halt)
	return w
}

func (w *loadWriter) halt() {
	w.stopped.Store(true)
	w.wg.Wait()
}

// Under a steady write load, SIGTERM makes walcast store and confirm what
// it read and exit cleanly within 10 s; the slot's confirmed position
// then covers everything on the bus, so the next start re-reads nothing
// already stored. Across three such restarts a resuming client receives
// every committed row exactly once, and the Redis stream holds each row
// once.
func TestSigtermUnderLoadLosesAndRepeatsNothing(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t, testenv.WithAOF())
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	port := testenv.FreePort(t)
	args := []string{"--redis-url", rd.URL()}
	p := startProcess(t, pg.URL(), port, args...)
	p.waitReady(t)
	client, stopClient := startResumingClient(t, p.addr)

	load := startLoad(t, pg.URL())
	var exits []time.Duration
	for round := 0; round < 3; round++ {
		time.Sleep(time.Second) // under load
		before := load.committed.Load()
		took := p.sigterm(t)
		exits = append(exits, took)
		checkCleanShutdown(t, round, p.out.String())
		confirmed, top := checkNothingReread(t, round, pg.URL(), rdb)
		t.Logf("round %d: exited %v after SIGTERM with %d rows committed; confirmed %s, newest stream entry %s",
			round, took.Round(time.Millisecond), before, confirmed, top)

		time.Sleep(300 * time.Millisecond) // writes go on while walcast is down
		p = startProcess(t, pg.URL(), port, args...)
		p.waitReady(t)
	}
	time.Sleep(500 * time.Millisecond)
	load.halt()

	// Every row the database has, exactly once, to the client and in the stream.
	rows := electorNames(t, pg.URL())
	eventually(t, 30*time.Second, "the client received every row", func() bool { return client.received(len(rows), 0) })
	stopClient()

	client.mu.Lock()
	defer client.mu.Unlock()
	client.checkExactlyOnce(t, rows)
	entries, err := changeEntries(rdb)
	if err != nil {
		t.Fatal(err)
	}
	if entries != int64(len(rows)) {
		t.Errorf("the stream holds %d entries for %d committed rows", entries, len(rows))
	}
	t.Logf("%d rows committed under load, %d delivered, %d stream entries, %d client reconnects; SIGTERM to exit: %v",
		len(rows), len(client.ids), entries, client.drops, exits)
	if int64(len(rows)) != load.committed.Load() {
		t.Errorf("the database has %d rows, the writers committed %d", len(rows), load.committed.Load())
	}
	if len(rows) < 1000 {
		t.Errorf("only %d rows written: the load was not steady", len(rows))
	}
}

// checkCleanShutdown checks the log of a walcast stopped by SIGTERM: it
// confirmed its position, with no warning or error.
func checkCleanShutdown(t *testing.T, round int, out string) {
	t.Helper()
	if !strings.Contains(out, "confirmed position on shutdown") {
		t.Errorf("round %d: no \"confirmed position on shutdown\" in the log:\n%s", round, out)
	}
	if strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("round %d: warnings or errors during a clean shutdown:\n%s", round, out)
	}
}

// checkNothingReread checks that everything on the bus is confirmed, so a
// restart re-reads none of it; it returns the slot's confirmed position
// and the stream's newest id.
func checkNothingReread(t *testing.T, round int, dbURL string, rdb *redis.Client) (confirmed, top string) {
	t.Helper()
	waitSlotInactive(t, dbURL, "walcast")
	queryRow(t, dbURL, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'walcast'", nil, &confirmed)
	confirmedLSN := parseLSNText(t, confirmed)
	newest, err := rdb.XRevRangeN(t.Context(), "walcast:changes", "+", "-", 1).Result()
	if err != nil || len(newest) == 0 {
		t.Fatalf("read the stream's top: %v %v", newest, err)
	}
	topPos, err := schema.ParsePosition(newest[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if topPos.LSN >= confirmedLSN {
		t.Errorf("round %d: the stream's newest entry %s (commit at %d) is not below the confirmed position %s (%d): a restart re-reads stored changes",
			round, newest[0].ID, topPos.LSN, confirmed, confirmedLSN)
	}
	return confirmed, newest[0].ID
}

// parseLSNText parses PostgreSQL's "16/B374D848" form.
func parseLSNText(t *testing.T, s string) uint64 {
	t.Helper()
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("parse lsn %q: %v", s, err)
	}
	return uint64(lsn)
}

// changeEntries counts the stream's change entries (not dashboard_update).
func changeEntries(rdb *redis.Client) (int64, error) {
	var n int64
	from := "-"
	for {
		res, err := rdb.XRangeN(context.Background(), "walcast:changes", from, "+", 10000).Result()
		if err != nil {
			return 0, err
		}
		for _, x := range res {
			if x.Values["t"] != "dashboard_update" {
				n++
			}
		}
		if len(res) < 10000 {
			return n, nil
		}
		from = "(" + res[len(res)-1].ID
	}
}

// A walsender that stopped answering does not hold shutdown up: walcast
// gives up on ending the stream after 2 s and exits; the next start
// re-reads from the last confirmed position.
func TestShutdownWithAFrozenWalsenderExitsInTime(t *testing.T) {
	pg := electionDB(t)
	app, logs := startLogged(t, cmdRun, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	pauseProcess(t, walsenderPID(t, pg.URL(), "walcast"))
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'unsent')`)
	start := time.Now()
	if err := app.stop(t); err != nil {
		t.Fatalf("walcast returned %v", err)
	}
	took := time.Since(start)
	t.Logf("walcast stopped %v after it was asked to", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("shutdown took %v, want at most 10 s", took)
	}
	if !strings.Contains(logs.String(), "final standby status update failed") {
		t.Errorf("no warning about the unconfirmed shutdown:\n%s", logs.String())
	}
}
