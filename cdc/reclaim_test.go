package cdc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/testenv"
)

// holdSlot streams from slot on a replication connection named app and
// returns its walsender's PID.
func holdSlot(t *testing.T, pg *testenv.Postgres, slot, app string) (int32, *pgconn.PgConn) {
	t.Helper()
	ctx := context.Background()
	rc, err := pgconn.Connect(ctx, pg.URL()+"&replication=database&application_name="+app)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close(context.Background()) })
	if err := pglogrepl.StartReplication(ctx, rc, slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names 'walcast'"}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s, err := SlotStatus(ctx, pg.URL(), slot)
		if err == nil && s.ActivePID != 0 {
			return s.ActivePID, rc
		}
	}
	t.Fatal("the holder does not stream")
	return 0, nil
}

// reclaimSlot terminates the walsender holding the slot only when its
// application_name is this Capture's own token: another process's, even
// one calling itself "walcast" or "walcast-<another token>", is left
// alone and reported as the holder.
func TestReclaimSlotTerminatesOnlyItsOwnWalsender(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	pg.Exec(t, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION walcast FOR TABLE t")
	pg.Exec(t, "SELECT pg_create_logical_replication_slot('walcast', 'pgoutput')")
	c := New(Config{DatabaseURL: pg.URL(), Slot: "walcast", Publication: "walcast"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	for _, foreign := range []string{"walcast", "walcast-000000000000", "pg_recvlogical"} {
		pid, rc := holdSlot(t, pg, "walcast", foreign)
		slot, err := slotStatus(ctx, conn, "walcast")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.reclaimSlot(ctx, conn, slot)
		var held *slotHeldError
		if !errors.As(err, &held) || held.pid != pid {
			t.Errorf("slot held by %q: %v, want a slotHeldError naming PID %d", foreign, err, pid)
		}
		if s, _ := slotStatus(ctx, conn, "walcast"); s.ActivePID != pid {
			t.Errorf("the walsender of %q (PID %d) was terminated", foreign, pid)
		}
		rc.Close(ctx)
		for s, _ := slotStatus(ctx, conn, "walcast"); s.ActivePID != 0; s, _ = slotStatus(ctx, conn, "walcast") {
			time.Sleep(20 * time.Millisecond)
		}
	}

	pid, _ := holdSlot(t, pg, "walcast", c.AppName())
	slot, err := slotStatus(ctx, conn, "walcast")
	if err != nil {
		t.Fatal(err)
	}
	slot, err = c.reclaimSlot(ctx, conn, slot)
	if err != nil || slot.ActivePID != 0 {
		t.Fatalf("own walsender (PID %d): %v, slot %+v; want it terminated and the slot free", pid, err, slot)
	}
	// The process leaves pg_stat_activity a moment after the slot.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var gone bool
		if err := conn.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid).Scan(&gone); err != nil {
			t.Fatal(err)
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("own walsender PID %d still runs", pid)
		}
	}
}
