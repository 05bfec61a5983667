package cdc

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file watches a streaming session from the side: a heartbeat that
// proves changes still flow end to end, stall detection, and the guard on
// the WAL the slot holds back on the database server's disk.
//
// The heartbeat is a non-transactional logical message written on an
// ordinary connection (pg_logical_emit_message). It enters the WAL like any
// change, so it comes back through the replication stream only when the
// walsender decodes and sends, and the receive loop reads: its round trip
// is the stream's lag, even while the tracked tables are idle. pgoutput
// forwards logical messages from PostgreSQL 14 on; before that, liveness
// falls back to the server's keepalives, which prove the connection but
// not the decoding.

// heartbeatPrefix is the prefix of walcast's logical messages.
const heartbeatPrefix = "walcast_heartbeat"

// walCheckInterval is how often the slot's WAL is read when heartbeats are
// off.
const walCheckInterval = 10 * time.Second

// Liveness modes, as Status.Liveness reports them.
const (
	livenessHeartbeat = "heartbeat"
	livenessKeepalive = "keepalive"
)

// maxPendingBeats bounds the heartbeats remembered while none comes back;
// the oldest are the ones that matter.
const maxPendingBeats = 1024

// liveness tracks a session's heartbeats: which were sent and not yet seen
// back, and the last round trip.
type liveness struct {
	heard atomic.Int64 // unix nanos of the last message of any kind from the server

	mu       sync.Mutex
	mode     string      // livenessHeartbeat or livenessKeepalive; "" before the first session
	started  time.Time   // when the session started streaming
	pending  []time.Time // heartbeats sent and not yet seen back, oldest first
	lastBack time.Time   // when the last heartbeat came back
	lag      time.Duration
}

// reset starts a new session.
func (l *liveness) reset(mode string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode, l.started = mode, now
	l.pending = l.pending[:0]
	l.lastBack, l.lag = time.Time{}, 0
	l.heard.Store(now.UnixNano())
}

// sent records a heartbeat about to be written. It must be recorded before
// the write: the message may come back before the write returns.
func (l *liveness) sent(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) < maxPendingBeats {
		l.pending = append(l.pending, at)
	}
}

// unsent forgets a heartbeat whose write failed: it will never come back.
func (l *liveness) unsent(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, p := range l.pending {
		if p.Equal(at) {
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			return
		}
	}
}

// back records the arrival of the heartbeat sent at id (unix nanos). The
// WAL is read in order, so every heartbeat sent before it has passed too.
// It reports false for a heartbeat this session did not send (a previous
// holder's, re-read after a restart).
func (l *liveness) back(id int64, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, p := range l.pending {
		if p.UnixNano() == id {
			l.lag = max(now.Sub(p), 0)
			l.lastBack = now
			l.pending = append(l.pending[:0], l.pending[i+1:]...)
			return true
		}
	}
	return false
}

// snapshot returns the mode, the current lag (the last round trip, or the
// age of the oldest heartbeat still out when that is larger: a heartbeat
// out for 30 s means the stream is at least 30 s behind) and when the last
// heartbeat came back.
func (l *liveness) snapshot(now time.Time) (mode string, lag time.Duration, lastBack time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lag = l.lag
	if len(l.pending) > 0 {
		lag = max(lag, now.Sub(l.pending[0]))
	}
	return l.mode, lag, l.lastBack
}

// stall says why the stream counts as stalled at now, or "" when it does
// not: a heartbeat older than threshold has not come back or, in
// keepalive mode, the server has sent nothing for longer than threshold.
func (l *liveness) stall(now time.Time, threshold time.Duration) string {
	if threshold <= 0 {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.mode {
	case livenessHeartbeat:
		if len(l.pending) > 0 {
			if age := now.Sub(l.pending[0]); age > threshold {
				return fmt.Sprintf("no heartbeat came back within %s (the oldest was sent %s ago)", threshold, age.Round(time.Millisecond))
			}
		}
	case livenessKeepalive:
		if quiet := now.Sub(time.Unix(0, l.heard.Load())); quiet > threshold {
			return fmt.Sprintf("nothing received from the server for %s (threshold %s)", quiet.Round(time.Millisecond), threshold)
		}
	}
	return ""
}

// heartbeatContent is the message's content: when it was sent (unix
// nanos, the heartbeat's id) and the slot, so that walcasts reading other
// slots of the same database ignore it.
func heartbeatContent(at time.Time, slot string) string {
	return strconv.FormatInt(at.UnixNano(), 10) + " " + slot
}

// parseHeartbeat recognises walcast's heartbeat in a pgoutput Message
// ('M') of protocol version 1: flags byte, LSN, prefix (C string), content
// length and content. It returns the heartbeat's id when the message is a
// heartbeat for slot.
func parseHeartbeat(msg []byte, slot string) (id int64, ok bool) {
	if len(msg) == 0 || msg[0] != msgMessage {
		return 0, false
	}
	r := &reader{b: msg[1:]}
	r.byte("message flags")
	r.uint64("message lsn")
	prefix := r.cstring("message prefix")
	n := r.uint32("message length")
	if r.err != nil || prefix != heartbeatPrefix || n > uint32(len(r.b)) {
		return 0, false
	}
	content := r.bytes(int(n), "message content")
	at, who, found := bytes.Cut(content, []byte(" "))
	if !found || string(who) != slot {
		return 0, false
	}
	id, err := strconv.ParseInt(string(at), 10, 64)
	return id, err == nil
}

// monitor runs next to a streaming session until ctx ends: it writes
// heartbeats and reads the slot's WAL on conn (an ordinary connection that
// nothing else uses meanwhile), and logs stalls. end ends the session with
// an error that Run returns (a lost slot).
func (c *Capture) monitor(ctx context.Context, conn *pgx.Conn, emitSQL string, end context.CancelCauseFunc) {
	var wg sync.WaitGroup
	wg.Go(func() { c.probe(ctx, conn, emitSQL, end) })
	wg.Go(func() { c.watchStall(ctx) })
	wg.Wait()
}

// probe writes a heartbeat (when emitSQL is set) and reads the slot's WAL,
// every HeartbeatInterval (or walCheckInterval without heartbeats).
func (c *Capture) probe(ctx context.Context, conn *pgx.Conn, emitSQL string, end context.CancelCauseFunc) {
	every := c.cfg.HeartbeatInterval
	if every <= 0 {
		every = walCheckInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false  // the last heartbeat write failed: log the first failure only
	timedOut := false // the last failure was a timeout: the connection went silent
	var own *pgx.Conn // a connection this probe opened to replace conn
	defer func() {
		if own != nil {
			closeConn(ctx, own.PgConn())
		}
	}()
	// A query that does not answer in time closes the connection (pgx
	// closes a connection whose query's context ends mid-flight), and the
	// next round opens another.
	timeout := min(c.cfg.QueryTimeout, max(every, 5*time.Second))
	for {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		if conn.IsClosed() {
			// The server or a timeout (idle_session_timeout, a query that
			// timed out) closed it: open another for the rest of the session.
			if nc, err := c.connect(qctx); err == nil {
				if own != nil {
					closeConn(ctx, own.PgConn())
				}
				own, conn = nc, nc
				if c.cfg.OnReplaced != nil {
					reason := "closed"
					if timedOut {
						reason = "timeout"
					}
					c.cfg.OnReplaced("query", reason)
				}
				timedOut = false
			}
		}
		if emitSQL != "" {
			at := time.Now()
			c.live.sent(at)
			_, err := conn.Exec(qctx, emitSQL, heartbeatContent(at, c.cfg.Slot))
			switch {
			case err != nil && ctx.Err() == nil:
				c.live.unsent(at)
				timedOut = timedOut || qctx.Err() != nil
				if !failing {
					c.log.Warn("cannot write a heartbeat; retrying, stall detection waits meanwhile", "err", err)
				}
				failing = true
			case err == nil && failing:
				c.log.Info("writing heartbeats again")
				failing = false
			}
		}
		if ctx.Err() == nil {
			w, exists, err := readSlot(qctx, conn, c.cfg.Slot)
			if err != nil && ctx.Err() == nil {
				timedOut = timedOut || qctx.Err() != nil
				c.log.Debug("cannot read the slot's WAL retention", "err", err)
			} else if err == nil {
				if lost := c.noteWAL(w, exists); lost != nil {
					cancel()
					end(lost)
					return
				}
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchStall logs when the stream stalls and when it moves again: once
// each per stall, also across a session closed as stalled and the next.
func (c *Capture) watchStall(ctx context.Context) {
	threshold := c.cfg.StallThreshold
	if threshold <= 0 {
		return
	}
	t := time.NewTicker(min(time.Second, max(threshold/4, 50*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.noteStall(c.live.stall(now, threshold), now)
		}
	}
}

// noteWAL records the slot's WAL retention and logs crossings of
// MaxRetainedWAL and changes of wal_status. It returns the SetupError that
// ends capture when PostgreSQL invalidated the slot.
func (c *Capture) noteWAL(w SlotInfo, exists bool) error {
	c.mu.Lock()
	prevStatus, wasOver := c.walStatus, c.walOver
	c.retainedWAL, c.walStatus, c.safeWAL = w.RetainedWAL, w.WALStatus, w.SafeWALSize
	limit := c.cfg.MaxRetainedWAL
	over := limit > 0 && w.RetainedWAL > limit
	c.walOver = over
	c.mu.Unlock()

	if !exists {
		return nil
	}
	if w.WALStatus == "lost" {
		return c.slotLost()
	}
	switch {
	case over && !wasOver:
		c.log.Warn("replication slot retains more WAL than --max-retained-wal: it fills the database server's disk until capture catches up",
			"retained", formatBytes(w.RetainedWAL), "max_retained_wal", formatBytes(limit), "wal_status", w.WALStatus, "safe_wal_size", safeText(w.SafeWALSize))
	case !over && wasOver:
		c.log.Info("replication slot retains less WAL than --max-retained-wal again", "retained", formatBytes(w.RetainedWAL), "max_retained_wal", formatBytes(limit))
	}
	if w.WALStatus != prevStatus && prevStatus != "" {
		switch {
		case w.WALStatus == "unreserved":
			c.log.Warn("replication slot is past max_slot_wal_keep_size (wal_status unreserved): PostgreSQL invalidates it at the next checkpoint unless capture catches up",
				"retained", formatBytes(w.RetainedWAL), "fix", "keep capture running and storing, or raise max_slot_wal_keep_size")
		case prevStatus == "unreserved":
			c.log.Info("replication slot is within max_slot_wal_keep_size again", "wal_status", w.WALStatus)
		}
	}
	return nil
}

// slotLost reports a slot PostgreSQL invalidated, once per Capture: the
// log line with the recovery step, and OnLost so that clients resync. It
// returns the SetupError that stops capture.
func (c *Capture) slotLost() error {
	err := lostSlotError(c.cfg.Slot)
	if c.lostReported.CompareAndSwap(false, true) {
		c.log.Error("replication slot was invalidated by PostgreSQL (wal_status lost): changes were lost; clients must refetch", "fix", err.Fix)
		if c.cfg.OnLost != nil {
			c.cfg.OnLost()
		}
	}
	return err
}

// formatBytes renders a byte count as pg_size_pretty does, in 1024 steps.
func formatBytes(n int64) string {
	if n < 0 {
		return "unknown"
	}
	units := []string{"bytes", "kB", "MB", "GB", "TB"}
	v, i := n, 0
	for i < len(units)-1 && v >= 10*1024 {
		v, i = v/1024, i+1
	}
	return fmt.Sprintf("%d %s", v, units[i])
}

func safeText(n int64) string {
	switch {
	case n == NoWALLimit:
		return "unlimited"
	case n < 0:
		return "-" + formatBytes(-n)
	}
	return formatBytes(n)
}
