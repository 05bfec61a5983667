package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/ctxsleep"
	"github.com/walcast/walcast/schema"
)

// This file seeds the live state: the rows of the tracked tables read
// under the snapshot that creating a replication slot exports, handed to
// a StateLoader with the position they are consistent with. The slot's
// own creation exports one when walcast creates the slot; a slot that
// already exists is complemented by a TEMPORARY slot made only for its
// snapshot, while capture keeps streaming from the real one.

// StateLoader keeps the live state capture seeds (pipeline.Seeder
// implements it over the bus).
type StateLoader interface {
	// StateReady reports whether a complete live state exists; when it
	// does not, capture seeds one.
	StateReady(ctx context.Context) (bool, error)
	// LoadState replaces the live state of tables ("schema.name") by the
	// rows that rows yields in batches: every row of those tables as of
	// at, each an insert Change at position at, read under a snapshot
	// taken at that time. at is SnapshotPosition of the consistent point:
	// every change the snapshot holds sorts at or before it, every change
	// the slot streams sorts after it.
	LoadState(ctx context.Context, at schema.Position, taken time.Time, tables []string,
		rows func(yield func([]schema.Change) error) error) error
}

// SnapshotPosition returns the position of the snapshot a replication slot
// exports at its consistent point lsn.
//
// PostgreSQL streams from a slot every transaction whose commit record
// starts at or after the consistent point, and the exported snapshot sees
// exactly those that committed before it. A change's Position.LSN is its
// commit record's start, so the snapshot's changes have LSN < lsn and the
// streamed ones LSN >= lsn. A commit record may start exactly at the
// consistent point: its first change is (lsn, 0), which must sort after
// the snapshot, so the snapshot is placed just before it, at the last
// position of lsn-1, rather than at (lsn, 0).
func SnapshotPosition(lsn uint64) schema.Position {
	return schema.Position{LSN: lsn - 1, Seq: math.MaxUint64}
}

// snapshotBatch bounds how many rows, and about how many bytes, one batch
// given to the StateLoader holds.
const (
	snapshotBatch      = 1000
	snapshotBatchBytes = 4 << 20
)

// needsSeed reports whether the live state must be seeded.
func (c *Capture) needsSeed(ctx context.Context) (bool, error) {
	if c.cfg.State == nil {
		return false, nil
	}
	ready, err := c.cfg.State.StateReady(ctx)
	if err != nil {
		return false, fmt.Errorf("read the live state's status: %w", err)
	}
	return !ready, nil
}

// seed reads the tracked tables under the exported snapshot name, taken
// at the consistent point lsn, and loads them into the live state. The
// replication connection that exported the snapshot must stay idle until
// seed returns: its next command ends the snapshot.
func (c *Capture) seed(ctx context.Context, tracked map[uint32]trackedRel, name string, lsn uint64, source string) (SeedResult, error) {
	start := time.Now()
	var res SeedResult
	conn, err := c.connectText(ctx)
	if err != nil {
		return res, err
	}
	defer closeConn(ctx, conn.PgConn())
	if err := c.lockSeed(ctx, conn); err != nil {
		return res, err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return res, fmt.Errorf("begin the snapshot's transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+name+"'"); err != nil {
		return res, fmt.Errorf("set transaction snapshot %s: %w", name, err)
	}
	rd, err := c.describe(ctx, conn, tracked)
	if err != nil {
		return res, err
	}
	at, tables := SnapshotPosition(lsn), rd.names()
	log := c.log.With("source", source, "at", at.String(), "consistent_point", pglogrepl.LSN(lsn).String())
	log.Info("seeding the live state from a consistent snapshot", "tables", len(tables))
	var rows int
	err = c.cfg.State.LoadState(ctx, at, start, tables, func(yield func([]schema.Change) error) error {
		rows = 0
		return rd.read(ctx, conn, at, func(batch []schema.Change) error {
			rows += len(batch)
			return yield(batch)
		})
	})
	if err != nil {
		return res, fmt.Errorf("seed the live state from the snapshot at %s: %w", at, err)
	}
	res = SeedResult{At: at, Tables: tables, Rows: rows, Took: time.Since(start)}
	log.Info("seeded the live state", "rows", rows, "tables", len(tables), "took", res.Took.Round(time.Millisecond))
	return res, nil
}

// lockSeed takes, for the connection's life, the advisory lock that makes
// the seeds of one slot's live state take turns: capture's and `walcast
// state rebuild`'s, in any process. The bus stages one load at a time.
func (c *Capture) lockSeed(ctx context.Context, conn *pgx.Conn) error {
	const key = "SELECT hashtext('walcast live state seed ' || $1)"
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(("+key+"))", c.cfg.Slot).Scan(&got); err != nil {
		return fmt.Errorf("take the seed's advisory lock: %w", err)
	}
	if got {
		return nil
	}
	c.log.Info("another seed of the live state is running (capture's, or walcast state rebuild); waiting for it to end")
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(("+key+"))", c.cfg.Slot); err != nil {
		return fmt.Errorf("wait for the other seed of the live state: %w", err)
	}
	return nil
}

// SeedResult says what seeding loaded into the live state.
type SeedResult struct {
	At     schema.Position // the snapshot's position: the state's floor
	Tables []string        // the tables loaded
	Rows   int             // the rows loaded
	Took   time.Duration
}

// connectText opens an ordinary connection whose text output of values is
// the replication connection's (see replicationConfig), so that a value
// read from a table converts exactly as the same value read from the WAL.
func (c *Capture) connectText(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := c.pgConfig()
	if err != nil {
		return nil, err
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for k, v := range textFormat {
		cfg.RuntimeParams[k] = v
	}
	sctx, cancel := c.step(ctx)
	defer cancel()
	conn, err := pgx.ConnectConfig(sctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database for the snapshot: %w", redactURLError(err))
	}
	return conn, nil
}

// textFormat are the session settings that fix PostgreSQL's text output of
// values where the decoder's conversions rely on it.
var textFormat = map[string]string{
	"DateStyle":          "ISO, YMD",
	"TimeZone":           "UTC",
	"IntervalStyle":      "iso_8601",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

// seedTemporary seeds the live state from the snapshot of a TEMPORARY
// logical slot, on connections of its own: the slot capture streams from
// is not touched, and PostgreSQL drops the temporary slot when its
// connection closes.
func (c *Capture) seedTemporary(ctx context.Context, tracked map[uint32]trackedRel) (SeedResult, error) {
	conn, err := c.openReplication(ctx)
	if err != nil {
		return SeedResult{}, err
	}
	defer closeConn(ctx, conn)
	token := make([]byte, 4)
	_, _ = rand.Read(token)
	name := c.cfg.Slot
	if len(name) > 40 {
		name = name[:40]
	}
	name += "_seed_" + hex.EncodeToString(token)
	// No timeout: creating a slot waits for the transactions running at
	// that moment to end, however long they take.
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return SeedResult{}, fmt.Errorf("create temporary replication slot %s for the snapshot (it needs a free max_replication_slots and max_wal_senders entry): %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return SeedResult{}, fmt.Errorf("parse consistent point %q of slot %s: %w", res.ConsistentPoint, name, err)
	}
	return c.seed(ctx, tracked, res.SnapshotName, uint64(lsn), "temporary slot "+name)
}

// stateCheckInterval is how often a streaming session asks whether the
// live state is still ready once it was: Redis restarted without its data,
// a new epoch, or someone deleted it.
const stateCheckInterval = 15 * time.Second

// seedWhileStreaming seeds the live state next to a streaming session
// whenever it is not ready (first start with state on, walcast or Redis
// killed while seeding, the state lost), retrying until it is done, and
// checks again every stateCheckInterval until the session ends. Capture
// keeps streaming meanwhile: the store's floor and row versions sort out
// the changes before and after the snapshot.
func (c *Capture) seedWhileStreaming(ctx context.Context, tracked map[uint32]trackedRel) {
	backoff := time.Second
	for {
		need, err := c.needsSeed(ctx)
		if err == nil && need {
			_, err = c.seedTemporary(ctx, tracked)
		}
		wait := stateCheckInterval
		if err != nil && ctx.Err() == nil {
			c.log.Error("seeding the live state failed; changes still stream, the state is not ready; retrying", "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, time.Minute)
		} else if err == nil {
			backoff = time.Second
		}
		if !ctxsleep.Sleep(ctx, wait) {
			return
		}
	}
}

// Rebuild seeds the live state again from a consistent snapshot, whether
// or not it is ready, next to a capture that keeps running: `walcast state
// rebuild`, after raising --state-max-rows or to repair the state. No
// change is lost or repeated: the snapshot comes from a temporary slot,
// and the store applies the changes streamed after it.
func Rebuild(ctx context.Context, cfg Config, state StateLoader) (SeedResult, error) {
	cfg.State = state
	c := New(cfg, nil)
	setup, err := c.connect(ctx)
	if err != nil {
		return SeedResult{}, err
	}
	defer closeConn(ctx, setup.PgConn())
	sctx, cancel := c.step(ctx)
	defer cancel()
	tracked, err := c.prepare(sctx, setup)
	if err != nil {
		return SeedResult{}, err
	}
	// Without the slot nothing streams the changes after the snapshot,
	// and the slot capture creates later would start after a gap.
	if _, exists, err := readSlot(sctx, setup, c.cfg.Slot); err != nil || !exists {
		if err == nil {
			err = &SetupError{Problem: fmt.Sprintf("replication slot %s does not exist: the live state would miss the changes until capture creates it", c.cfg.Slot),
				Fix: "start walcast capture (or run) with the same --slot: it creates the slot and seeds the state from its snapshot"}
		}
		return SeedResult{}, err
	}
	return c.seedTemporary(ctx, tracked)
}

// createSlotSeeding creates the slot with an exported snapshot and seeds
// the live state from it before anything is streamed: the state is then
// exactly the tables at the slot's start. A failed seed leaves the slot
// in place and is only logged: streaming starts, and the seeder next to
// it seeds from a temporary slot.
func (c *Capture) createSlotSeeding(ctx context.Context, conn *pgconn.PgConn) error {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, c.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return fmt.Errorf("create replication slot %s: %w", c.cfg.Slot, err)
	}
	c.log.Info("created replication slot", "consistent_point", res.ConsistentPoint, "snapshot", res.SnapshotName)
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err == nil {
		// The replication connection stays idle until the rows are read:
		// its next command would end the snapshot.
		_, err = c.seed(ctx, c.tracked, res.SnapshotName, uint64(lsn), "slot creation")
	}
	if err != nil && ctx.Err() == nil {
		c.log.Error("seeding the live state at slot creation failed; streaming starts, and the state is seeded from a temporary slot", "err", err)
	}
	return nil
}
