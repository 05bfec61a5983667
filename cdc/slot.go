package cdc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file holds what walcast reads about its replication slot while it
// runs (the WAL the slot holds back) and the operator's slot tools:
// SlotStatus and DropSlot, behind `walcast slot status|drop`.

// ErrNoSlot is returned by SlotStatus and DropSlot when the slot does not
// exist.
var ErrNoSlot = errors.New("replication slot does not exist")

// SlotActiveError is returned by DropSlot while a process streams from the
// slot: dropping it would cut that process off.
type SlotActiveError struct {
	Slot   string
	PID    int32
	Holder string // the holder's application name and address, when known
}

func (e *SlotActiveError) Error() string {
	return fmt.Sprintf("replication slot %s is in use by PID %d (%s)", e.Slot, e.PID, e.Holder)
}

// NoWALLimit is the SafeWALSize of a slot that max_slot_wal_keep_size does
// not limit (or that is lost: it has no WAL left to lose).
const NoWALLimit = math.MinInt64

// SlotInfo is a replication slot as pg_replication_slots describes it.
type SlotInfo struct {
	Name      string
	Type      string // "logical" or "physical"
	Plugin    string // output plugin; "" for a physical slot
	Database  string // "" for a physical slot
	ActivePID int32  // the process streaming from it, 0 when none
	Holder    string // the holder's application name and address, when active

	ConfirmedFlushLSN uint64 // everything before it was confirmed; 0 for a physical slot
	RestartLSN        uint64 // oldest WAL the slot needs; 0 once the slot is lost

	// RetainedWAL is the WAL the slot holds back: the current WAL position
	// minus RestartLSN, in bytes; -1 when unknown (a lost slot).
	RetainedWAL       int64
	RetainedWALPretty string // the same, by pg_size_pretty
	WALStatus         string // reserved, extended, unreserved or lost
	// SafeWALSize is how much more WAL may be written before PostgreSQL
	// invalidates the slot (negative once past max_slot_wal_keep_size);
	// NoWALLimit when max_slot_wal_keep_size is unlimited or the slot lost.
	SafeWALSize       int64
	SafeWALSizePretty string
}

// SlotStatus reads the slot's row of pg_replication_slots. It returns an
// error wrapping ErrNoSlot when there is none.
func SlotStatus(ctx context.Context, dbURL, slot string) (SlotInfo, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return SlotInfo{}, fmt.Errorf("connect to database: %w", redactURLError(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return slotStatus(ctx, conn, slot)
}

func slotStatus(ctx context.Context, conn *pgx.Conn, slot string) (SlotInfo, error) {
	s := SlotInfo{Name: slot}
	var plugin, db, confirmed, restart, walStatus, retainedPretty, safePretty *string
	var pid *int32
	var retained, safe *int64
	err := conn.QueryRow(ctx, `SELECT slot_type, plugin, database, active_pid,
			confirmed_flush_lsn::text, restart_lsn::text,
			(pg_current_wal_lsn() - restart_lsn)::bigint, pg_size_pretty(pg_current_wal_lsn() - restart_lsn),
			wal_status, safe_wal_size, pg_size_pretty(safe_wal_size)
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s.Type, &plugin, &db, &pid,
		&confirmed, &restart, &retained, &retainedPretty, &walStatus, &safe, &safePretty)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("%w: %s", ErrNoSlot, slot)
	}
	if err != nil {
		return s, fmt.Errorf("read slot %s: %w", slot, err)
	}
	s.Plugin, s.Database, s.WALStatus = deref(plugin), deref(db), deref(walStatus)
	s.RetainedWALPretty, s.SafeWALSizePretty = deref(retainedPretty), deref(safePretty)
	s.RetainedWAL, s.SafeWALSize = -1, NoWALLimit
	if retained != nil {
		s.RetainedWAL = *retained
	}
	if safe != nil {
		s.SafeWALSize = *safe
	}
	if pid != nil {
		s.ActivePID = *pid
		s.Holder = holderOf(ctx, conn, *pid)
	}
	for _, l := range []struct {
		text *string
		to   *uint64
	}{{confirmed, &s.ConfirmedFlushLSN}, {restart, &s.RestartLSN}} {
		if l.text == nil {
			continue
		}
		if *l.to, err = parseLSN(*l.text); err != nil {
			return s, fmt.Errorf("read slot %s: %w", slot, err)
		}
	}
	return s, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// DropSlot drops the replication slot. It refuses with a *SlotActiveError
// while a process streams from it, and returns an error wrapping ErrNoSlot
// when there is no such slot. A logical slot can only be dropped from a
// connection to its own database.
func DropSlot(ctx context.Context, dbURL, slot string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to database: %w", redactURLError(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := slotStatus(ctx, conn, slot)
	if err != nil {
		return err
	}
	if s.ActivePID != 0 {
		return &SlotActiveError{Slot: slot, PID: s.ActivePID, Holder: s.Holder}
	}
	if s.Database != "" && s.Database != conn.Config().Database {
		return fmt.Errorf("replication slot %s belongs to database %s: connect to that database to drop it", slot, s.Database)
	}
	_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "55006": // object_in_use: someone started streaming meanwhile
		s, _ := slotStatus(ctx, conn, slot)
		return &SlotActiveError{Slot: slot, PID: s.ActivePID, Holder: s.Holder}
	case errors.As(err, &pgErr) && pgErr.Code == "42704": // undefined_object: dropped meanwhile
		return fmt.Errorf("%w: %s", ErrNoSlot, slot)
	}
	return fmt.Errorf("drop replication slot %s: %w", slot, err)
}

// slotWALState is what capture watches about its slot while it streams.
type slotWALState struct {
	retained  int64  // bytes from restart_lsn to the current WAL position; -1 when unknown
	status    string // wal_status
	safe      int64  // safe_wal_size; NoWALLimit when unlimited
	exists    bool
	activePID int32
}

// readSlotWAL reads how much WAL the slot holds back and PostgreSQL's
// verdict on it.
func readSlotWAL(ctx context.Context, conn *pgx.Conn, slot string) (slotWALState, error) {
	w := slotWALState{retained: -1, safe: NoWALLimit}
	var retained, safe *int64
	var status *string
	var pid *int32
	err := conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status, safe_wal_size, active_pid
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained, &status, &safe, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, nil
	}
	if err != nil {
		return w, fmt.Errorf("read WAL retained by slot %s: %w", slot, err)
	}
	w.exists = true
	w.status = deref(status)
	if retained != nil {
		w.retained = *retained
	}
	if safe != nil {
		w.safe = *safe
	}
	if pid != nil {
		w.activePID = *pid
	}
	return w, nil
}

// lostSlotError is the SetupError for a slot PostgreSQL invalidated.
func lostSlotError(slot string) *SetupError {
	return &SetupError{
		Problem: fmt.Sprintf("replication slot %s was invalidated by PostgreSQL (wal_status lost): changes were lost", slot),
		Fix: fmt.Sprintf("drop it (walcast slot drop --slot %s --yes, or SELECT pg_drop_replication_slot('%s');) and restart walcast once with --new-epoch, which creates it anew and tells every client to resync",
			slot, strings.ReplaceAll(slot, "'", "''")),
	}
}
