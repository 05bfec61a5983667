package cdc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/testenv"
)

func TestSlotStatusAndDrop(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.WithSetting("max_slot_wal_keep_size", "64MB"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := SlotStatus(ctx, pg.URL(), "walcast"); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("status of a missing slot: %v, want ErrNoSlot", err)
	}
	if err := DropSlot(ctx, pg.URL(), "walcast"); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("drop of a missing slot: %v, want ErrNoSlot", err)
	}

	pg.Exec(t, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION walcast FOR TABLE t")
	pg.Exec(t, "SELECT pg_create_logical_replication_slot('walcast', 'pgoutput')")
	pg.Exec(t, "INSERT INTO t SELECT generate_series(1, 1000)")
	s, err := SlotStatus(ctx, pg.URL(), "walcast")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", s)
	if s.Type != "logical" || s.Plugin != "pgoutput" || s.Database != "postgres" || s.ActivePID != 0 ||
		s.ConfirmedFlushLSN == 0 || s.RestartLSN == 0 || s.RetainedWAL <= 0 || s.RetainedWALPretty == "" ||
		s.WALStatus != "reserved" || s.SafeWALSize <= 0 || !strings.HasSuffix(s.SafeWALSizePretty, "MB") {
		t.Errorf("status = %+v", s)
	}

	// While a process streams from the slot, drop refuses and names it.
	rc, err := pgconn.Connect(ctx, pg.URL()+"&replication=database&application_name=holder")
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(ctx, rc, "walcast", 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names 'walcast'"}})
	if err != nil {
		t.Fatal(err)
	}
	var active *SlotActiveError
	for deadline := time.Now().Add(10 * time.Second); ; {
		err = DropSlot(ctx, pg.URL(), "walcast")
		if errors.As(err, &active) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the walsender takes the slot as it starts
	}
	if active == nil || active.PID == 0 || !strings.Contains(active.Holder, `"holder"`) {
		t.Fatalf("drop of an active slot: %v, want a SlotActiveError naming the holder", err)
	}
	if s, _ := SlotStatus(ctx, pg.URL(), "walcast"); s.ActivePID != active.PID || !strings.Contains(s.Holder, "holder") {
		t.Errorf("status of the active slot = %+v", s)
	}

	rc.Close(ctx)
	for deadline := time.Now().Add(10 * time.Second); ; {
		err = DropSlot(ctx, pg.URL(), "walcast")
		if !errors.As(err, &active) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the walsender releases the slot as it exits
	}
	if err != nil {
		t.Fatalf("drop after the holder left: %v", err)
	}
	if _, err := SlotStatus(ctx, pg.URL(), "walcast"); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("status after drop: %v, want ErrNoSlot", err)
	}
}
