package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/walcast/walcast/internal/ctxsleep"
	"github.com/walcast/walcast/internal/netguard"
	"github.com/walcast/walcast/schema"
)

// Sink stores committed changes. cdc confirms a transaction to PostgreSQL
// only after Store returned nil for its last piece.
type Sink interface {
	// Store stores the changes of txs, in order, before returning nil. A
	// change whose Position was stored before (WAL re-read after a crash)
	// must be recognised and not stored twice. Store is retried with the
	// same input after an error.
	Store(ctx context.Context, txs []schema.Tx) error
}

// Preparer is a Sink that can do ahead the part of storing that needs no
// bus (routing, encoding): capture then prepares the next batch while the
// previous one is being stored. Stores still run one at a time, in order.
type Preparer interface {
	// Prepare returns the store of txs, which does what Store(ctx, txs)
	// would and is retried after an error as Store is.
	Prepare(txs []schema.Tx) (store func(ctx context.Context) error)
}

// Config configures a Capture.
type Config struct {
	DatabaseURL string
	Slot        string
	Publication string
	Tables      []schema.Table
	Logger      *slog.Logger

	// StatusInterval is the longest time between standby status updates;
	// PostgreSQL's wal_sender_timeout (60 s by default) must be longer.
	StatusInterval time.Duration // default 10 s
	// MaxBackoff caps the wait between reconnection attempts.
	MaxBackoff time.Duration // default 10 s
	// MaxRowBytes: see DefaultMaxRowBytes.
	MaxRowBytes int
	// DrainTimeout bounds how long shutdown waits for in-flight
	// transactions to be stored and confirmed.
	DrainTimeout time.Duration // default 5 s

	// HeartbeatInterval is how often a streaming capture writes a
	// heartbeat (a logical message, PostgreSQL 14+) and reads the WAL its
	// slot retains. 0: no heartbeats; liveness then comes from the
	// server's keepalives and the WAL is read every 10 s.
	HeartbeatInterval time.Duration
	// StallThreshold: a heartbeat not back within it (or, without
	// heartbeats, no message from the server for that long) counts as a
	// stall, reported in Status and logged. 0: no stall detection.
	StallThreshold time.Duration
	// MaxRetainedWAL: the WAL the slot holds back, in bytes, above which a
	// warning is logged (once per crossing). 0: no warning.
	MaxRetainedWAL int64
	// Lineage, when set, is checked before every session: a database
	// whose history does not continue the stored one is refused with a
	// SetupError (see lineage.go), or with NewEpoch starts a new epoch.
	Lineage  Lineage
	NewEpoch bool
	// OnKeys, when set, is called at each session's start with the
	// tracked tables' primary key columns from the catalog, by qualified
	// (configured) name, in key order; a table without one is left out.
	// The router takes them (schema.Router.SetKeys) to give changes their
	// row identity.
	OnKeys func(keys map[string][]string)
	// OnLost is called once when PostgreSQL invalidated the slot (changes
	// were lost), before Run returns the SetupError saying so: the place
	// to tell clients to resync.
	OnLost func()

	// Transport sets TCP keepalive and TCP_USER_TIMEOUT on every
	// connection to PostgreSQL (zero: the operating system's defaults).
	Transport netguard.Options
	// QueryTimeout bounds each step on the ordinary connection (setup,
	// heartbeats, the slot's WAL) and the start of a replication session;
	// a connection that does not answer within it is closed and replaced.
	QueryTimeout time.Duration // default 30 s
	// OnReplaced is called when a connection was closed because it went
	// silent or failed, and another opened in its place: conn is
	// "replication" or "query", reason "silent", "timeout" or "closed".
	OnReplaced func(conn, reason string)

	// State, when set, keeps the live state: when it is not ready, capture
	// seeds it from a consistent snapshot (see snapshot.go): the one slot
	// creation exports, or for a slot that exists a temporary slot's,
	// while streaming goes on.
	State StateLoader
}

// Status is a snapshot of a Capture's progress, for health checks and
// metrics.
type Status struct {
	Streaming bool   // a replication session is open and reading
	Received  uint64 // WAL position received from the server
	Confirmed uint64 // position confirmed to the server: everything before it is stored
	ServerEnd uint64 // the server's WAL end, as last reported
	LastError string // the last error that ended a session, "" after a good start
	Waiting   string // why capture is waiting (slot held by another process), or ""
	Sessions  uint64 // replication sessions started streaming

	// Liveness is how a streaming session is known to move: "heartbeat"
	// (logical messages, PostgreSQL 14+) or "keepalive"; "" before the
	// first session.
	Liveness string
	// HeartbeatLag is the round trip of the last heartbeat, or the age of
	// the oldest one not yet back when that is larger; 0 before the first.
	HeartbeatLag  time.Duration
	LastHeartbeat time.Time // when the last heartbeat came back
	// Stalled says why a streaming session counts as stalled (see
	// Config.StallThreshold), or "".
	Stalled string

	// The slot's WAL, as last read while streaming (-1 when unknown).
	RetainedWAL int64  // bytes from restart_lsn to the current WAL position
	WALStatus   string // wal_status: reserved, extended, unreserved, lost; "" before the first read
	SafeWALSize int64  // safe_wal_size (negative past the limit); NoWALLimit when unlimited or unknown
}

// Capture streams committed changes of the tracked tables from a
// replication slot into a Sink.
type Capture struct {
	cfg  Config
	sink Sink
	log  *slog.Logger

	streaming atomic.Bool
	received  atomic.Uint64
	confirmed atomic.Uint64
	serverEnd atomic.Uint64
	sessions  atomic.Uint64
	live      liveness

	// tracked are the tracked tables by relation id, resolved by each
	// session's setup before its receiver starts (same goroutine), and
	// kept for the next session: a table renamed while walcast runs is
	// followed across reconnections.
	tracked map[uint32]trackedRel
	renames renameLog
	warned  map[string]bool // the setup warnings logged, by check and fix (session goroutine only)

	lostReported atomic.Bool // OnLost was called
	noMessages   sync.Once   // the PostgreSQL < 14 note was logged

	// appName is the replication connection's application_name: "walcast"
	// and a token of this Capture, so that capture can recognise a
	// walsender left over from its own previous session.
	appName string

	mu           sync.Mutex
	lastErr      string
	waiting      string
	waitingSince time.Time // when this standby started waiting; zero when not waiting
	retainedWAL  int64
	walStatus    string
	safeWAL      int64
	walOver      bool // retainedWAL is above MaxRetainedWAL (logged)

	stalled    string    // why the last session was closed as stalled, until the next one streams
	stallSince time.Time // when the current stall was logged; zero when none
}

// New returns a Capture. Call Run to start it.
func New(cfg Config, sink Sink) *Capture {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	token := make([]byte, 6)
	_, _ = rand.Read(token)
	return &Capture{cfg: cfg, sink: sink, log: cfg.Logger.With("slot", cfg.Slot), retainedWAL: -1, safeWAL: NoWALLimit,
		appName: "walcast-" + hex.EncodeToString(token), warned: map[string]bool{}}
}

// AppName is the application_name of this Capture's replication
// connections: "walcast-" and a random token of this process.
func (c *Capture) AppName() string { return c.appName }

// Status returns the current progress.
func (c *Capture) Status() Status {
	now := time.Now()
	mode, lag, lastBack := c.live.snapshot(now)
	st := Status{
		Streaming:     c.streaming.Load(),
		Received:      c.received.Load(),
		Confirmed:     c.confirmed.Load(),
		ServerEnd:     c.serverEnd.Load(),
		Sessions:      c.sessions.Load(),
		Liveness:      mode,
		HeartbeatLag:  lag,
		LastHeartbeat: lastBack,
	}
	if st.Streaming {
		st.Stalled = c.live.stall(now, c.cfg.StallThreshold)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.Stalled == "" {
		st.Stalled = c.stalled // a session closed as stalled, until the next one streams
	}
	st.LastError, st.Waiting = c.lastErr, c.waiting
	st.RetainedWAL, st.WALStatus, st.SafeWALSize = c.retainedWAL, c.walStatus, c.safeWAL
	return st
}

func (c *Capture) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.lastErr = ""
	} else {
		c.lastErr = err.Error()
	}
}

// setWaiting records why capture waits for the slot ("" once it streams)
// and reports whether it started waiting just now.
func (c *Capture) setWaiting(s string) (started bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiting = s
	if s == "" {
		c.waitingSince = time.Time{}
		return false
	}
	if c.waitingSince.IsZero() {
		c.waitingSince = time.Now()
		return true
	}
	return false
}

// stopWaiting ends a standby's wait and returns how long it lasted (0 when
// capture was not waiting).
func (c *Capture) stopWaiting() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var waited time.Duration
	if !c.waitingSince.IsZero() {
		waited = time.Since(c.waitingSince)
	}
	c.waiting, c.waitingSince = "", time.Time{}
	return waited
}

// Run streams until ctx is cancelled, reconnecting with capped exponential
// backoff after lost connections. It returns nil after a clean shutdown and
// a *SetupError when the database's setup must be fixed first.
func (c *Capture) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	var heldBy int32 = -1 // the slot's holder as last logged
	for {
		started := time.Now()
		err := c.session(ctx)
		c.streaming.Store(false)
		var stall *stallError
		if !errors.As(err, &stall) {
			// A session that ended otherwise reports its own error.
			c.mu.Lock()
			c.stalled = ""
			c.mu.Unlock()
		}
		if ctx.Err() != nil {
			return nil
		}
		if IsSetupError(err) {
			c.setErr(err)
			return err
		}
		var held *slotHeldError
		if errors.As(err, &held) {
			// A standby waits its turn: poll often so it takes over
			// quickly, but say so once, and again when the holder changes.
			if c.setWaiting(held.Error()) || held.pid != heldBy {
				c.log.Info("replication slot is held by another process; waiting to take over", "holder_pid", held.pid, "holder", held.holder)
			}
			heldBy = held.pid
			if !ctxsleep.Sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		c.setErr(err)
		if stall != nil {
			c.stallEnded(stall)
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		c.log.Error("replication session ended; reconnecting", "err", err, "retry_in", backoff)
		if !ctxsleep.Sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

// slotHeldError is returned while another process streams from the slot.
type slotHeldError struct {
	slot   string
	pid    int32
	holder string
}

func (e *slotHeldError) Error() string {
	return fmt.Sprintf("replication slot %s is active for PID %d (%s)", e.slot, e.pid, e.holder)
}

// stallError ends a session whose server sent nothing, not even a
// keepalive it was asked for, for the stall threshold.
type stallError struct {
	quiet, threshold time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("replication connection silent: nothing received from the server for %s (stall threshold %s); closed it",
		e.quiet.Round(time.Millisecond), e.threshold)
}

// stallEnded records a session closed as stalled: reported as stalled
// until the next session streams, logged once, counted.
func (c *Capture) stallEnded(e *stallError) {
	c.mu.Lock()
	c.stalled = e.Error()
	c.mu.Unlock()
	c.noteStall(e.Error(), time.Now())
	if c.cfg.OnReplaced != nil {
		c.cfg.OnReplaced("replication", "silent")
	}
}

// noteStall logs when the stream stalls and when it moves again, once
// each per stall, whichever part of capture notices.
func (c *Capture) noteStall(reason string, now time.Time) {
	c.mu.Lock()
	since := c.stallSince
	switch {
	case reason != "" && since.IsZero():
		c.stallSince = now
	case reason == "" && !since.IsZero():
		c.stallSince = time.Time{}
	default:
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if reason != "" {
		c.log.Error("replication stalled: changes are not coming through; not ready until they do", "reason", reason,
			"hint", "the walsender may be stuck or the network down (see pg_stat_replication), or capture is far behind or cannot store changes")
		return
	}
	c.log.Info("replication moving again", "stalled_for", now.Sub(since).Round(time.Millisecond))
}

// pgConfig parses the database URL for an ordinary connection with
// walcast's transport settings.
func (c *Capture) pgConfig() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(c.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redactURLError(err))
	}
	cfg.DialFunc = c.cfg.Transport.Dialer(0).DialContext
	return cfg, nil
}

// connect opens an ordinary connection, within QueryTimeout unless the URL
// sets connect_timeout.
func (c *Capture) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := c.pgConfig()
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.QueryTimeout)
		defer cancel()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", redactURLError(err))
	}
	return conn, nil
}

// replicationConfig returns the configuration of a replication
// connection, with the session settings that fix pgoutput's text formats
// and this Capture's application_name.
func (c *Capture) replicationConfig() (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(c.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redactURLError(err))
	}
	cfg.DialFunc = c.cfg.Transport.Dialer(0).DialContext
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = c.appName
	// pgoutput formats values with the walsender's settings: pin the ones
	// the decoder's fast paths rely on.
	for k, v := range textFormat {
		cfg.RuntimeParams[k] = v
	}
	return cfg, nil
}

// redactURLError keeps a password out of a URL parse error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("invalid URL: %v", ue.Err)
	}
	return err
}

// session runs one replication connection from setup to loss.
func (c *Capture) session(ctx context.Context) error {
	// Setup runs on an ordinary connection: catalog queries and DDL. It
	// stays open for the session's heartbeats.
	setup, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, setup.PgConn())
	slot, exists, err := c.setUp(ctx, setup)
	if err != nil {
		return err
	}
	conn, err := c.openReplication(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	if slot, err = c.ensureSlot(ctx, conn, setup, slot, exists); err != nil {
		return err
	}
	emitSQL, err := c.startReplication(ctx, conn, setup, slot)
	if err != nil {
		return err
	}
	return c.stream(ctx, conn, setup, emitSQL)
}

// step bounds one setup step by QueryTimeout: a connection that went
// silent while it was being set up is closed by the timeout.
func (c *Capture) step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.QueryTimeout)
}

// setUp checks the database and prepares the tracked tables and the
// publication (see prepare), then reads the slot and, when this process's
// previous walsender still holds it, reclaims it.
func (c *Capture) setUp(ctx context.Context, setup *pgx.Conn) (slot SlotInfo, exists bool, err error) {
	sctx, cancel := c.step(ctx)
	defer cancel()
	tracked, err := c.prepare(sctx, setup)
	if err != nil {
		return slot, false, err
	}
	c.tracked = tracked
	sctx, cancel = c.step(ctx)
	defer cancel()
	if slot, exists, err = readSlot(sctx, setup, c.cfg.Slot); err != nil || !exists || slot.ActivePID == 0 {
		return slot, exists, err
	}
	sctx, cancel = c.step(ctx)
	defer cancel()
	slot, err = c.reclaimSlot(sctx, setup, slot)
	return slot, true, err
}

// openReplication opens the replication connection.
func (c *Capture) openReplication(ctx context.Context) (*pgconn.PgConn, error) {
	rcfg, err := c.replicationConfig()
	if err != nil {
		return nil, err
	}
	sctx, cancel := c.step(ctx)
	defer cancel()
	conn, err := pgconn.ConnectConfig(sctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return conn, nil
}

// ensureSlot checks the database's lineage and creates the slot when it
// does not exist, returning its row.
func (c *Capture) ensureSlot(ctx context.Context, conn *pgconn.PgConn, setup *pgx.Conn, slot SlotInfo, exists bool) (SlotInfo, error) {
	sctx, cancel := c.step(ctx)
	defer cancel()
	sys, err := pglogrepl.IdentifySystem(sctx, conn)
	if err != nil {
		return slot, fmt.Errorf("identify system: %w", err)
	}
	if err := c.checkLineage(sctx, conn, sys, exists); err != nil {
		return slot, err
	}
	if exists {
		return slot, nil
	}
	seeding, err := c.needsSeed(sctx)
	if err != nil {
		// The seeder next to the stream retries; creating the slot and
		// streaming do not wait for the bus.
		c.log.Warn("cannot tell whether the live state needs seeding; creating the slot without a snapshot, the state is seeded from a temporary slot once the bus answers", "err", err)
	}
	// No timeout: creating a slot waits for the transactions running at
	// that moment to end, however long they take; seeding reads every
	// tracked row.
	if seeding {
		if err := c.createSlotSeeding(ctx, conn); err != nil {
			return slot, err
		}
	} else {
		res, err := pglogrepl.CreateReplicationSlot(ctx, conn, c.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			return slot, fmt.Errorf("create replication slot %s: %w", c.cfg.Slot, err)
		}
		c.log.Info("created replication slot", "consistent_point", res.ConsistentPoint)
	}
	sctx, cancel = c.step(ctx)
	defer cancel()
	slot, _, err = readSlot(sctx, setup, c.cfg.Slot)
	return slot, err
}

// startReplication starts streaming from the slot's confirmed position and
// marks the session as streaming. It returns the heartbeat statement ("":
// no heartbeats).
func (c *Capture) startReplication(ctx context.Context, conn *pgconn.PgConn, setup *pgx.Conn, slot SlotInfo) (emitSQL string, err error) {
	sctx, cancel := c.step(ctx)
	defer cancel()
	mode, emitSQL, err := c.heartbeatMode(sctx, setup)
	if err != nil {
		return "", err
	}
	args := []string{
		"proto_version '1'",
		"publication_names " + publicationNamesOption(c.cfg.Publication),
	}
	if emitSQL != "" {
		args = append(args, "messages 'true'")
	}
	c.confirmed.Store(slot.ConfirmedFlushLSN)
	err = pglogrepl.StartReplication(sctx, conn, c.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: args,
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" {
			return "", &slotHeldError{slot: c.cfg.Slot, holder: pgErr.Message}
		}
		return "", fmt.Errorf("start replication from slot %s at %s: %w", c.cfg.Slot, pglogrepl.LSN(slot.ConfirmedFlushLSN), err)
	}
	if waited := c.stopWaiting(); waited > 0 {
		c.log.Info("took over the replication slot", "waited", waited.Round(time.Millisecond))
	}
	c.setErr(nil)
	c.mu.Lock()
	c.stalled = ""
	c.mu.Unlock()
	c.live.reset(mode, time.Now())
	c.streaming.Store(true)
	c.sessions.Add(1)
	c.log.Info("streaming changes", "from", pglogrepl.LSN(slot.ConfirmedFlushLSN).String(), "publication", c.cfg.Publication, "liveness", mode)
	return emitSQL, nil
}

// closeConn closes a connection, waiting at most a second for the
// goodbye to be written: a silent connection must not hold capture up.
func closeConn(ctx context.Context, conn *pgconn.PgConn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}

// reclaimSlot handles a slot that a walsender holds. When that walsender
// is this Capture's own (its application_name carries this process's
// token: a previous session whose connection went silent, which
// PostgreSQL would otherwise keep until wal_sender_timeout), it terminates
// it and waits for the slot to be free, and returns the slot's row.
// Anyone else's walsender is left alone: it returns a *slotHeldError, and
// capture waits as a standby.
func (c *Capture) reclaimSlot(ctx context.Context, conn *pgx.Conn, slot SlotInfo) (SlotInfo, error) {
	pid := slot.ActivePID
	var terminated bool
	err := conn.QueryRow(ctx, `SELECT pg_terminate_backend(a.pid)
		FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1 AND s.database = current_database() AND a.pid = $2
		AND a.backend_type = 'walsender' AND a.application_name = $3`, c.cfg.Slot, pid, c.appName).Scan(&terminated)
	if errors.Is(err, pgx.ErrNoRows) {
		return slot, &slotHeldError{slot: c.cfg.Slot, pid: pid, holder: slot.Holder}
	}
	if err != nil {
		return slot, fmt.Errorf("terminate this process's previous walsender (PID %d), which still holds slot %s: %w", pid, c.cfg.Slot, err)
	}
	c.log.Warn("terminated this process's previous walsender, which still held the replication slot", "pid", pid)
	for {
		s, _, err := readSlot(ctx, conn, c.cfg.Slot)
		if err != nil {
			return slot, err
		}
		if s.ActivePID != pid {
			if s.ActivePID != 0 {
				return s, &slotHeldError{slot: c.cfg.Slot, pid: s.ActivePID, holder: s.Holder}
			}
			return s, nil
		}
		if !ctxsleep.Sleep(ctx, 20*time.Millisecond) {
			return slot, fmt.Errorf("previous walsender (PID %d) still holds slot %s after pg_terminate_backend: %w", pid, c.cfg.Slot, ctx.Err())
		}
	}
}

// heartbeatMode decides how this session's liveness is known: heartbeats
// when they are on and the server's pgoutput forwards logical messages
// (PostgreSQL 14+), else keepalives. emitSQL writes one heartbeat; "" when
// there are none.
func (c *Capture) heartbeatMode(ctx context.Context, conn *pgx.Conn) (mode, emitSQL string, err error) {
	if c.cfg.HeartbeatInterval <= 0 {
		return livenessKeepalive, "", nil
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return "", "", fmt.Errorf("read server version: %w", err)
	}
	switch {
	case version < 140000:
		c.noMessages.Do(func() {
			c.log.Info("PostgreSQL before 14 does not forward logical messages to pgoutput: no heartbeats; stall detection uses the server's keepalives", "server_version_num", version)
		})
		return livenessKeepalive, "", nil
	case version < 170000:
		// The walwriter flushes the message within wal_writer_delay.
		return livenessHeartbeat, "SELECT pg_logical_emit_message(false, '" + heartbeatPrefix + "', $1::text)", nil
	default:
		return livenessHeartbeat, "SELECT pg_logical_emit_message(false, '" + heartbeatPrefix + "', $1::text, true)", nil
	}
}

// stream is the replication loop: the receiver (this goroutine) reads and
// decodes, the publisher stores pieces in the sink and advances the
// confirmed position. They are kept apart so that reading WAL never waits
// on one bus round trip, and the publisher can batch.
//
// A monitor runs next to them on the ordinary connection setup: heartbeats,
// stall detection, the slot's WAL. It can end the session with a
// SetupError (the slot was lost), which stream returns. When the live state
// needs seeding and the slot existed, a seeder runs next to them too, on
// connections of its own (see seedWhileStreaming).
func (c *Capture) stream(ctx context.Context, conn *pgconn.PgConn, setup *pgx.Conn, emitSQL string) error {
	sessCtx, endSession := context.WithCancelCause(ctx)
	defer endSession(nil)
	var side sync.WaitGroup
	side.Go(func() { c.monitor(sessCtx, setup, emitSQL, endSession) })
	if c.cfg.State != nil {
		// It seeds only a state that is not ready (a slot created just now
		// was seeded before streaming), and checks it now and then.
		side.Go(func() { c.seedWhileStreaming(sessCtx, c.tracked) })
	}
	err := c.streamChanges(sessCtx, conn)
	endSession(nil)
	side.Wait()
	if cause := context.Cause(sessCtx); IsSetupError(cause) {
		return cause
	}
	return err
}

// streamChanges runs the receiver and the publisher until ctx ends or the
// connection fails, then drains.
func (c *Capture) streamChanges(ctx context.Context, conn *pgconn.PgConn) error {
	pending := make(chan *Piece, 256)
	var outstanding atomic.Int64 // pieces sent to the publisher and not yet stored

	pubCtx, cancelPub := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPub()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		c.publish(pubCtx, pending, &outstanding)
	}()

	recvErr := c.receive(ctx, conn, pending, &outstanding)
	close(pending)

	// Shutdown or a lost connection: give the publisher a bounded time to
	// store what was read, then confirm it if the connection still works.
	timer := time.NewTimer(c.cfg.DrainTimeout)
	select {
	case <-pubDone:
	case <-timer.C:
		c.log.Warn("in-flight changes not stored before the drain timeout; they will be re-read on restart", "timeout", c.cfg.DrainTimeout)
		cancelPub()
		<-pubDone
	}
	timer.Stop()
	if (recvErr == nil || errors.Is(recvErr, context.Canceled)) && !IsSetupError(context.Cause(ctx)) {
		if err := c.confirmAndEnd(conn); err != nil {
			c.log.Warn("final standby status update failed; the next start re-reads from the last confirmed position", "err", err)
		} else {
			c.log.Info("confirmed position on shutdown", "confirmed", pglogrepl.LSN(c.confirmed.Load()).String())
		}
	}
	return recvErr
}

// endStreamTimeout bounds the wait for the server to end the stream on
// shutdown.
const endStreamTimeout = 2 * time.Second

// confirmAndEnd sends the final confirmed position and ends the stream
// with CopyDone, reading (and discarding) what the server still sends
// until it has ended its side. Closing the connection right after the
// status update is not enough: under load the server has sent data that
// was not read, and closing a socket with unread data resets the
// connection, which can discard the status update before the server
// reads it.
func (c *Capture) confirmAndEnd(conn *pgconn.PgConn) error {
	// A server that stopped reading must not hold shutdown up.
	netConn := conn.Conn()
	_ = netConn.SetDeadline(time.Now().Add(endStreamTimeout))
	defer netConn.SetDeadline(time.Time{})
	if err := c.sendStatus(conn, false); err != nil {
		return err
	}
	if _, err := pglogrepl.SendStandbyCopyDone(context.Background(), conn); err != nil {
		return fmt.Errorf("end replication stream: %w", err)
	}
	return nil
}

// publish stores pieces in order, batching whatever has queued up while the
// previous store was in flight, and retries a failed store until it
// succeeds or shutdown gives up.
//
// Under load it prepares the next batch (see Preparer) while a storer
// goroutine stores the previous one, and gathers the one after from what
// queued up meanwhile; when idle (nothing in flight, nothing
// queued) it stores the batch itself, sparing a change the storer's
// wake-up. Either way one batch is stored at a time, in order: publish
// stores inline only when the storer has nothing, and only publish gives
// it work. So a batch is never stored or confirmed before every batch
// ahead of it was.
func (c *Capture) publish(ctx context.Context, pending <-chan *Piece, outstanding *atomic.Int64) {
	st := &storer{c: c, outstanding: outstanding}
	// Unbuffered: a prepared batch waits here until the storer takes it,
	// and the next batch is gathered only then, from everything that
	// queued up meanwhile. Under load every store is then a full batch.
	prepared := make(chan preparedBatch)
	var inFlight atomic.Int64 // batches handed to the storer and not yet done with
	storerDone := make(chan struct{})
	go func() {
		defer close(storerDone)
		for pb := range prepared {
			ok := st.store(ctx, pb)
			inFlight.Add(-1)
			if !ok {
				return
			}
		}
	}()
	defer func() {
		close(prepared)
		<-storerDone
	}()
	for {
		batch, ok := nextBatch(pending)
		if !ok {
			return
		}
		pb := c.prepareBatch(batch)
		if inFlight.Load() == 0 && len(pending) == 0 {
			if !st.store(ctx, pb) {
				return // shutdown gave up on storing
			}
			continue
		}
		inFlight.Add(1)
		select {
		case prepared <- pb:
		case <-storerDone:
			return // shutdown gave up on storing
		}
	}
}

// prepareBatch makes the batch's store, routed ahead when the sink can.
func (c *Capture) prepareBatch(batch []*Piece) preparedBatch {
	txs := make([]schema.Tx, len(batch))
	for i, p := range batch {
		txs[i] = p.Tx
	}
	pb := preparedBatch{pieces: batch}
	if pr, ok := c.sink.(Preparer); ok {
		pb.store = pr.Prepare(txs)
	} else {
		pb.store = func(ctx context.Context) error { return c.sink.Store(ctx, txs) }
	}
	return pb
}

// maxBatch is the most pieces one store takes.
const maxBatch = 256

// nextBatch waits for a piece and takes whatever else has queued up, up
// to maxBatch; ok is false once pending is closed and drained.
func nextBatch(pending <-chan *Piece) (batch []*Piece, ok bool) {
	p, ok := <-pending
	if !ok {
		return nil, false
	}
	batch = append(make([]*Piece, 0, min(maxBatch, 1+len(pending))), p)
	for len(batch) < maxBatch {
		select {
		case p, ok := <-pending:
			if !ok {
				return batch, true
			}
			batch = append(batch, p)
		default:
			return batch, true
		}
	}
	return batch, true
}

// preparedBatch is a batch of pieces and its store.
type preparedBatch struct {
	pieces []*Piece
	store  func(ctx context.Context) error
}

// storer stores batches one at a time (publish makes sure of it): in the
// storer goroutine under load, in publish's own when idle.
type storer struct {
	c            *Capture
	outstanding  *atomic.Int64
	failingSince time.Time // the first failure of the store being retried
}

// store stores pb, retrying until it succeeds, and confirms its
// transactions. It returns false when shutdown gave up first.
func (s *storer) store(ctx context.Context, pb preparedBatch) bool {
	c := s.c
	backoff := 50 * time.Millisecond
	for {
		err := pb.store(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if s.failingSince.IsZero() {
			s.failingSince = time.Now()
			c.log.Error("storing changes failed; not confirming them and retrying", "err", err, "retry_in", backoff)
		} else {
			c.log.Debug("storing changes failed again; retrying", "err", err, "retry_in", backoff)
		}
		if !ctxsleep.Sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
	if !s.failingSince.IsZero() {
		c.log.Info("storing changes again; confirming resumes", "failed_for", time.Since(s.failingSince).Round(time.Millisecond))
		s.failingSince = time.Time{}
	}
	for _, p := range pb.pieces {
		if p.Commit {
			storeMax(&c.confirmed, p.EndLSN)
		}
	}
	s.outstanding.Add(-int64(len(pb.pieces)))
	return true
}

func storeMax(v *atomic.Uint64, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// receive reads the replication stream until ctx is done or the connection
// fails, sending standby status updates on the server's request, when the
// confirmed position moved, and at least every StatusInterval.
//
// With a stall threshold, a connection that goes quiet is asked for a
// keepalive every third of the threshold; when nothing at all arrives for
// the threshold while receive waits for the server (not while it waits for
// the bus to store), the connection is silent: receive returns a
// *stallError and the session is replaced. A stream that is merely behind
// (data arriving, heartbeats late) is reported, never cut: reconnecting
// would only read the same backlog again.
func (c *Capture) receive(ctx context.Context, conn *pgconn.PgConn, pending chan<- *Piece, outstanding *atomic.Int64) error {
	r := &receiver{c: c, conn: conn, pending: pending, outstanding: outstanding, dec: NewDecoder(),
		threshold: c.cfg.StallThreshold, tick: time.Second,
		lastStatus: time.Now(), lastSent: c.confirmed.Load(), listening: time.Now()}
	r.dec.MaxRowBytes = c.cfg.MaxRowBytes
	r.dec.tracked, r.dec.onRenamed = c.tracked, c.renamed
	if r.threshold > 0 {
		r.tick = min(r.tick, max(r.threshold/4, 50*time.Millisecond))
	}
	defer interruptOnCancel(ctx, conn.Conn())()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.keepUp(time.Now()); err != nil {
			return err
		}
		data, err := r.next(ctx)
		if err != nil {
			return err
		}
		if len(data) == 0 {
			continue // a read timeout, or a message without data
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			err = r.keepalive(data[1:])
		case pglogrepl.XLogDataByteID:
			err = r.xlogData(ctx, data[1:])
		}
		if err != nil {
			return err
		}
	}
}

// interruptOnCancel makes cancelling ctx interrupt a blocked read on
// netConn; the loop then sees ctx.Err. The returned stop waits for the
// interruption to be done, so that it cannot cut short the reads of the
// shutdown that follows.
func interruptOnCancel(ctx context.Context, netConn net.Conn) (stop func()) {
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-ctx.Done():
			_ = netConn.SetReadDeadline(time.Now())
		case <-stopWatch:
		}
	}()
	return func() {
		close(stopWatch)
		<-watchDone
	}
}

// receiver is one session's reading side (see receive): its decoder, and
// when it last told the server something or heard from it.
type receiver struct {
	c           *Capture
	conn        *pgconn.PgConn
	dec         *Decoder
	pending     chan<- *Piece
	outstanding *atomic.Int64 // pieces sent to the publisher and not yet stored

	threshold  time.Duration // StallThreshold; 0: no stall detection
	tick       time.Duration // the longest a read waits before keepUp runs again
	lastStatus time.Time     // the last standby status update
	lastSent   uint64        // the confirmed position it sent
	listening  time.Time     // the last message, or when receive last came back from the publisher
	lastAsk    time.Time     // the last keepalive request sent because the connection was quiet
}

// idle reports whether nothing read waits to be stored.
func (r *receiver) idle() bool { return !r.dec.InTx() && r.outstanding.Load() == 0 }

// keepUp sends the standby status updates that are due, and with a stall
// threshold asks a quiet connection for a keepalive, or gives up on a
// silent one.
func (r *receiver) keepUp(now time.Time) error {
	conf := r.c.confirmed.Load()
	if (conf != r.lastSent && now.Sub(r.lastStatus) >= r.tick) || now.Sub(r.lastStatus) >= r.c.cfg.StatusInterval {
		// When idle, ask for a keepalive: its WAL end lets an idle slot
		// advance past WAL that holds no tracked changes.
		if err := r.c.sendStatus(r.conn, r.idle()); err != nil {
			return err
		}
		r.lastStatus, r.lastSent = now, conf
	}
	if r.threshold <= 0 {
		return nil
	}
	quiet := now.Sub(r.listening)
	if quiet > r.threshold {
		return &stallError{quiet: quiet, threshold: r.threshold}
	}
	if quiet >= r.threshold/3 && now.Sub(r.lastAsk) >= r.threshold/3 {
		if err := r.c.sendStatus(r.conn, true); err != nil {
			return err
		}
		r.lastAsk, r.lastStatus, r.lastSent = now, now, conf
	}
	return nil
}

// next reads one message, waiting at most a tick. It returns the data of
// a CopyData message, nil after a timeout or another message, and an
// error when the stream failed or ended.
func (r *receiver) next(ctx context.Context) ([]byte, error) {
	_ = r.conn.Conn().SetReadDeadline(time.Now().Add(r.tick))
	if err := ctx.Err(); err != nil {
		return nil, err // the interruption's deadline may have been overwritten just now
	}
	msg, err := r.conn.ReceiveMessage(context.Background())
	if err != nil {
		if pgconn.Timeout(err) {
			return nil, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("receive replication message: %w", err)
	}
	r.listening = time.Now()
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		r.c.live.heard.Store(r.listening.UnixNano())
		return m.Data, nil
	case *pgproto3.ErrorResponse:
		return nil, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyDone:
		return nil, errors.New("replication stream ended by the server")
	}
	return nil, nil
}

// keepalive handles the server's keepalive: its WAL end, and its request
// for a reply.
func (r *receiver) keepalive(data []byte) error {
	ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data)
	if err != nil {
		return fmt.Errorf("parse keepalive: %w", err)
	}
	c := r.c
	c.serverEnd.Store(uint64(ka.ServerWALEnd))
	storeMax(&c.received, uint64(ka.ServerWALEnd))
	if r.idle() {
		// Nothing read is waiting to be stored, so everything up to the
		// server's WAL end is done with.
		storeMax(&c.confirmed, uint64(ka.ServerWALEnd))
	}
	if ka.ReplyRequested {
		if err := c.sendStatus(r.conn, false); err != nil {
			return err
		}
		r.lastStatus, r.lastSent = time.Now(), c.confirmed.Load()
	}
	return nil
}

// xlogData handles WAL data: a heartbeat coming back, or a pgoutput
// message, decoded and handed to the publisher.
func (r *receiver) xlogData(ctx context.Context, data []byte) error {
	xld, err := pglogrepl.ParseXLogData(data)
	if err != nil {
		return fmt.Errorf("parse xlogdata: %w", err)
	}
	c := r.c
	storeMax(&c.received, uint64(xld.WALStart))
	c.serverEnd.Store(uint64(xld.ServerWALEnd))
	if len(xld.WALData) > 0 && xld.WALData[0] == msgMessage {
		if id, ok := parseHeartbeat(xld.WALData, c.cfg.Slot); ok {
			c.live.back(id, time.Now())
			return nil
		}
	}
	piece, err := r.dec.Decode(xld.WALData)
	if err != nil {
		return fmt.Errorf("at %s: %w", xld.WALStart, err)
	}
	if piece == nil {
		return nil
	}
	r.outstanding.Add(1)
	if err := r.push(ctx, piece); err != nil {
		return err
	}
	r.listening = time.Now()
	return nil
}

// push hands a piece to the publisher, keeping the server informed while
// the publisher is behind (a stalled bus must not also time out the
// replication connection).
func (r *receiver) push(ctx context.Context, p *Piece) error {
	select {
	case r.pending <- p:
		return nil
	default:
	}
	t := time.NewTicker(r.c.cfg.StatusInterval / 2)
	defer t.Stop()
	for {
		select {
		case r.pending <- p:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.c.sendStatus(r.conn, false); err != nil {
				return err
			}
			r.lastStatus, r.lastSent = time.Now(), r.c.confirmed.Load()
		}
	}
}

// sendStatus reports the confirmed position as flushed and applied. Only
// positions whose changes the sink stored are ever reported.
func (c *Capture) sendStatus(conn *pgconn.PgConn, replyRequested bool) error {
	conf := c.confirmed.Load()
	if conf == 0 {
		return nil // never report 0: pglogrepl would substitute the write position
	}
	recv := max(c.received.Load(), conf)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(recv),
		WALFlushPosition: pglogrepl.LSN(conf),
		WALApplyPosition: pglogrepl.LSN(conf),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("confirm lsn %s: %w", pglogrepl.LSN(conf), err)
	}
	return nil
}
