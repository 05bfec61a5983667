package cdc

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file holds readSlot, the one reader of pg_replication_slots (used
// by start-up, the monitor of a running session, walcast check and the
// slot commands), and the operator's slot tools: SlotStatus and DropSlot,
// behind `walcast slot status|drop`.

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
	s, exists, err := readSlot(ctx, conn, slot)
	if err == nil && !exists {
		err = fmt.Errorf("%w: %s", ErrNoSlot, slot)
	}
	return s, err
}

// readSlot is walcast's one reader of pg_replication_slots: start-up,
// the monitor of a streaming session, walcast check and walcast slot all
// read the slot's row through it. exists is false when there is no such
// slot; s then holds the "unknown" values (RetainedWAL -1, SafeWALSize
// NoWALLimit). On a standby the retained WAL is counted up to the last
// replayed position.
func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (s SlotInfo, exists bool, err error) {
	s = SlotInfo{Name: slot, RetainedWAL: -1, SafeWALSize: NoWALLimit}
	var plugin, db, confirmed, restart, walStatus, retainedPretty, safePretty, holder *string
	var pid *int32
	var retained, safe *int64
	err = conn.QueryRow(ctx, `SELECT s.slot_type, s.plugin, s.database, s.active_pid,
			CASE WHEN a.pid IS NOT NULL THEN format('application %s from %s', to_json(coalesce(a.application_name, '')), coalesce(a.client_addr::text, 'local')) END,
			s.confirmed_flush_lsn::text, s.restart_lsn::text,
			(w.lsn - s.restart_lsn)::bigint, pg_size_pretty(w.lsn - s.restart_lsn),
			s.wal_status, s.safe_wal_size, pg_size_pretty(s.safe_wal_size)
		FROM pg_replication_slots s
		CROSS JOIN (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) w(lsn)
		LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, slot).Scan(&s.Type, &plugin, &db, &pid, &holder,
		&confirmed, &restart, &retained, &retainedPretty, &walStatus, &safe, &safePretty)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read slot %s: %w", slot, err)
	}
	s.Plugin, s.Database, s.WALStatus = deref(plugin), deref(db), deref(walStatus)
	s.RetainedWALPretty, s.SafeWALSizePretty = deref(retainedPretty), deref(safePretty)
	if retained != nil {
		s.RetainedWAL = *retained
	}
	if safe != nil {
		s.SafeWALSize = *safe
	}
	if pid != nil {
		s.ActivePID = *pid
		s.Holder = deref(holder)
		if s.Holder == "" {
			s.Holder = "unknown" // the walsender is gone from pg_stat_activity
		}
	}
	for _, l := range []struct {
		text *string
		to   *uint64
	}{{confirmed, &s.ConfirmedFlushLSN}, {restart, &s.RestartLSN}} {
		if l.text == nil {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(*l.text)
		if err != nil {
			return s, true, fmt.Errorf("read slot %s: %w", slot, err)
		}
		*l.to = uint64(lsn)
	}
	return s, true, nil
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

// lostSlotError is the SetupError for a slot PostgreSQL invalidated, in
// walcast check's words.
func lostSlotError(slot string) *SetupError {
	f := lostSlotFinding(slot)
	return &SetupError{Problem: f.Detail, Fix: f.Fix}
}
