package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// walsenderPID returns the PID of the process streaming from slot.
func walsenderPID(t *testing.T, dbURL, slot string) int {
	t.Helper()
	var pid *int32
	queryRow(t, dbURL, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", []any{slot}, &pid)
	if pid == nil {
		t.Fatalf("nobody streams from slot %s", slot)
	}
	return int(*pid)
}

// waitSlotInactive waits until no process streams from slot: a walsender
// exits shortly after its client disconnected.
func waitSlotInactive(t *testing.T, dbURL, slot string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var active bool
		queryRow(t, dbURL, "SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)", []any{slot}, &active)
		if !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot %s still active 10 s after its reader stopped", slot)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queryRow runs a one-row query on a new connection.
func queryRow(t *testing.T, dbURL, sql string, args []any, dest ...any) {
	t.Helper()
	withConn(t, dbURL, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) {
		if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	})
}

// withConn runs f on a new connection to dbURL, all within timeout.
func withConn(t *testing.T, dbURL string, timeout time.Duration, f func(ctx context.Context, conn *pgx.Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	f(ctx, conn)
}
