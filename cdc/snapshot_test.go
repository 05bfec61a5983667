package cdc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// TestSnapshotPosition pins the snapshot's position against the changes
// around a consistent point C: a transaction committed before C (commit
// LSN at most C-1, any ordinal) is in the snapshot and must not sort after
// it; one whose commit record starts exactly at C is streamed and must
// sort after it, its first change (C, 0) included.
func TestSnapshotPosition(t *testing.T) {
	for _, c := range []uint64{1, 2, 0x16B3748, math.MaxUint64} {
		at := SnapshotPosition(c)
		for _, in := range []schema.Position{{LSN: c - 1}, {LSN: c - 1, Seq: 1 << 40}, {LSN: c - 1, Seq: math.MaxUint64}} {
			if at.Less(in) {
				t.Errorf("C=%d: snapshot %s sorts before %s, a change the snapshot holds", c, at, in)
			}
		}
		if c == math.MaxUint64 {
			continue
		}
		for _, out := range []schema.Position{{LSN: c}, {LSN: c, Seq: 1}, {LSN: c + 1}} {
			if !at.Less(out) {
				t.Errorf("C=%d: streamed change %s does not sort after the snapshot %s", c, out, at)
			}
		}
		if p, err := schema.ParsePosition(at.String()); err != nil || p != at {
			t.Errorf("C=%d: %s does not round-trip as an id: %v, %v", c, at, p, err)
		}
	}
}

// fakeState is the StateLoader of capture's seeding tests: it keeps each
// load, and can fail the first ones. The database is real.
type fakeState struct {
	mu    sync.Mutex
	ready bool
	fail  int // loads still to fail
	loads []fakeLoad
}

type fakeLoad struct {
	at     schema.Position
	tables []string
	rows   []schema.Change
}

func (s *fakeState) StateReady(context.Context) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, nil
}

func (s *fakeState) LoadState(_ context.Context, at schema.Position, _ time.Time, tables []string,
	rows func(yield func([]schema.Change) error) error) error {
	l := fakeLoad{at: at, tables: tables}
	if err := rows(func(b []schema.Change) error { l.rows = append(l.rows, b...); return nil }); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return errors.New("bus down")
	}
	s.loads = append(s.loads, l)
	s.ready = true
	return nil
}

func (s *fakeState) done() []fakeLoad {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.loads)
}

// startSeeding runs a Capture with a fakeState on a server prepared by
// setup, with tables tracked.
func startSeeding(t *testing.T, setup, tables string, state *fakeState) *sessionEnv {
	t.Helper()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "INSERT INTO committee (id, code, name) VALUES (1, 'C1', 'One')")
	if setup != "" {
		pg.Exec(t, setup)
	}
	e := &sessionEnv{pg: pg, sink: &fakeSink{}}
	e.c = New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast", Tables: checkTables(t, tables),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		StatusInterval: 100 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, State: state}, e.sink)
	e.run(t)
	return e
}

// TestSeedAtSlotCreationConvertsLikeTheStream seeds at slot creation a
// row of every type the decoder knows, then inserts the same values
// again: the row read from the table and the row read from the WAL hold
// the same JSON, column for column, and the snapshot sorts before the
// first streamed change.
func TestSeedAtSlotCreationConvertsLikeTheStream(t *testing.T) {
	t.Parallel()
	const values = `1.50, 'NaN', true, '{"k": [1, "two"]}', '{1,NULL,3}', '{"a,b","c\"d"}', '2026-11-25 12:00:00.5+00', '2026-11-25 12:00:00.25', '2026-11-25', '\xdeadbeef', 'sad', '{happy,sad}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, 'P1DT2H', 1e300, 12345678901234`
	state := &fakeState{}
	e := startSeeding(t, `CREATE TYPE mood AS ENUM ('happy', 'sad');
		CREATE TABLE typed (id int PRIMARY KEY, committee_id int, n numeric, f float8, b bool, j jsonb, a int[], t text[], ts timestamptz, tsl timestamp, d date, by bytea, m mood, ms mood[], u uuid, nothing text, iv interval, big float8, i8 int8);
		CREATE TABLE nokey (committee_id int, note text); ALTER TABLE nokey REPLICA IDENTITY FULL;
		INSERT INTO nokey VALUES (1, 'x');
		INSERT INTO typed VALUES (1, 1, `+values+`)`, "guarantee,typed=guarantee,nokey=guarantee", state)
	loads := state.done()
	if len(loads) != 1 {
		t.Fatalf("%d loads at slot creation, want 1", len(loads))
	}
	l := loads[0]
	if !slices.Equal(l.tables, []string{"public.guarantee", "public.typed"}) {
		t.Errorf("loaded tables %v, want guarantee and typed (nokey has no primary key)", l.tables)
	}
	if len(l.rows) != 1 {
		t.Fatalf("snapshot rows %d, want 1", len(l.rows))
	}
	e.pg.Exec(t, "INSERT INTO typed VALUES (2, 1, "+values+")")
	e.waitFor(t, "the insert streamed", func() bool { _, _, s := e.sink.snapshot(); return len(s) >= 1 })
	_, _, stored := e.sink.snapshot()
	snap, wal := l.rows[0], stored[0].Changes[0]
	if snap.Op != schema.Insert || snap.Pos != l.at || !l.at.Less(wal.Pos) {
		t.Errorf("snapshot change %v at %s (load at %s), streamed at %s: want an insert at the load's position, before the stream", snap.Op, snap.Pos, l.at, wal.Pos)
	}
	if len(snap.New) != len(wal.New) {
		t.Fatalf("snapshot row %s\nWAL row      %s", rowJSON(snap.New), rowJSON(wal.New))
	}
	for i := range snap.New {
		s, w := snap.New[i], wal.New[i]
		if s.Name == "id" {
			continue
		}
		if s.Name != w.Name || string(s.Value) != string(w.Value) {
			t.Errorf("column %s: snapshot %s, WAL %s %s", s.Name, s.Value, w.Name, w.Value)
		}
	}
}

// TestSeedFromTemporarySlotWhileStreaming: the seed at slot creation
// fails, capture streams anyway, and the seeder next to it seeds from a
// temporary slot while writers run. The snapshot's rows plus the streamed
// changes after its position give exactly the table at the end: nothing
// lost between the snapshot and the stream, nothing counted twice.
func TestSeedFromTemporarySlotWhileStreaming(t *testing.T) {
	t.Parallel()
	state := &fakeState{fail: 1}
	e := startSeeding(t, "INSERT INTO guarantee (id, committee_id, user_id) SELECT g, 1, 1 FROM generate_series(1, 500) g",
		schema.DefaultTables, state)
	ctx, cancel := context.WithCancel(context.Background())
	conn := pgConn(t, e.pg)
	var writer sync.WaitGroup
	writer.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			for _, w := range []struct {
				sql string
				arg int
			}{
				{"INSERT INTO guarantee (id, committee_id, user_id) VALUES ($1, 1, 1)", 501 + i},
				{"UPDATE guarantee SET status = 'strong' WHERE id = $1", 1 + i%500},
				{"DELETE FROM guarantee WHERE id = $1", 2 + (i*7)%499},
			} {
				if _, err := conn.Exec(context.Background(), w.sql, w.arg); err != nil {
					t.Errorf("writer: %s: %v", w.sql, err)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	e.waitFor(t, "the seed from a temporary slot", func() bool { return len(state.done()) == 1 })
	time.Sleep(200 * time.Millisecond) // writes after the snapshot too
	cancel()
	writer.Wait()
	want := tableRows(t, e.pg)
	end := currentLSN(t, e.pg)
	l := state.done()[0]
	got := map[string]string{}
	for _, ch := range l.rows {
		id, _ := ch.New.Get("id")
		got[string(id)] = string(rowStatus(ch.New))
	}
	e.waitFor(t, "every change streamed", func() bool {
		_, _, s := e.sink.snapshot()
		n := 0
		for _, tx := range s {
			n += len(tx.Changes)
		}
		return n > 0 && e.c.Status().Confirmed >= end
	})
	_, _, stored := e.sink.snapshot()
	for _, tx := range stored {
		for _, ch := range tx.Changes {
			if !l.at.Less(ch.Pos) {
				continue // in the snapshot already
			}
			switch ch.Op {
			case schema.Insert, schema.Update:
				id, _ := ch.New.Get("id")
				got[string(id)] = string(rowStatus(ch.New))
			case schema.Delete:
				id, _ := ch.Old.Get("id")
				delete(got, string(id))
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("snapshot and stream give %d rows, the table has %d", len(got), len(want))
	}
	for id, status := range want {
		if got[id] != status {
			t.Errorf("row %s: snapshot and stream give status %q, the table %q", id, got[id], status)
		}
	}
}

// rowStatus is a row's status column.
func rowStatus(r schema.Row) []byte { v, _ := r.Get("status"); return v }

// tableRows returns the guarantee table's status by id, as JSON text.
func tableRows(t *testing.T, pg *testenv.Postgres) map[string]string {
	t.Helper()
	out := map[string]string{}
	conn := pgConn(t, pg)
	rows, err := conn.Query(context.Background(), "SELECT id::text, to_json(status)::text FROM guarantee")
	if err != nil {
		t.Fatal(err)
	}
	var id, status string
	if _, err := pgx.ForEachRow(rows, []any{&id, &status}, func() error { out[id] = status; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// currentLSN is the server's current WAL position.
func currentLSN(t *testing.T, pg *testenv.Postgres) uint64 {
	t.Helper()
	var s string
	if err := pgConn(t, pg).QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(lsn)
}

// pgConn opens a connection for the test's own queries.
func pgConn(t *testing.T, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Rebuild refuses a database whose slot does not exist yet: nothing would
// carry the changes after its snapshot into the state.
func TestRebuildNeedsTheSlot(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	state := &fakeState{}
	_, err := Rebuild(context.Background(), Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
		Tables: checkTables(t, schema.DefaultTables), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, state)
	var se *SetupError
	if !errors.As(err, &se) || !strings.Contains(se.Problem, "does not exist") || len(state.done()) != 0 {
		t.Fatalf("Rebuild without a slot = %v, %d loads; want a SetupError and none", err, len(state.done()))
	}
}

// Seeds of one slot's state take turns: a rebuild waits while another
// seed holds the advisory lock, then loads.
func TestSeedsTakeTurns(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, schema.SQL)
	pg.Exec(t, "SELECT pg_create_logical_replication_slot('walcast', 'pgoutput')")
	holder := pgConn(t, pg)
	if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_lock(hashtext('walcast live state seed ' || 'walcast'))"); err != nil {
		t.Fatal(err)
	}
	state := &fakeState{}
	done := make(chan error, 1)
	go func() {
		_, err := Rebuild(context.Background(), Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast",
			Tables: checkTables(t, schema.DefaultTables), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, state)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Rebuild returned %v while another seed held the lock", err)
	case <-time.After(time.Second):
	}
	if n := len(state.done()); n != 0 {
		t.Fatalf("%d loads while another seed held the lock", n)
	}
	if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || len(state.done()) != 1 {
		t.Fatalf("Rebuild after the lock was released = %v, %d loads; want nil, 1", err, len(state.done()))
	}
}
