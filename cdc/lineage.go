package cdc

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/schema"
)

// A change's id is its commit position in the database's WAL, and the bus
// recognises a change it already stored (WAL re-read after a crash) by an
// id not above its newest. That holds only while the database's history
// continues the bus's. After a restore from backup, a point-in-time
// recovery, a failover to a standby, or when walcast points at another
// cluster, positions may go back, and every new change would be taken for
// one already stored: silently dropped, its slot position confirmed.
//
// So before each replication session capture compares the database with
// the origin recorded next to the stored history (system identifier,
// timeline), and refuses to stream when the database's history does not
// continue the bus's. The operator then restarts with Config.NewEpoch
// (--new-epoch), which discards the bus's history: every client is told to
// resync and ids start over.

// Lineage is what capture needs of the bus to check that the database's
// history continues the stored one.
type Lineage interface {
	// Lineage returns the origin recorded with the stored history (ok is
	// false when none is) and the position a new change must be above to be
	// stored (zero when nothing was ever stored).
	Lineage(ctx context.Context) (origin schema.Origin, ok bool, top schema.Position, err error)
	// SetOrigin records origin for the stored history, which it continues.
	SetOrigin(ctx context.Context, origin schema.Origin) error
	// NewEpoch discards the stored history and records origin: every
	// client is told to resync, and the ids that follow may be lower than
	// the ones before.
	NewEpoch(ctx context.Context, origin schema.Origin, reason string) error
}

// divergedError is the SetupError of a database whose history does not
// continue the bus's.
func divergedError(reason string) *SetupError {
	return &SetupError{
		Problem: reason + ": the database's history does not continue the stored one, so its new changes would be taken for changes already stored and dropped",
		Fix: "if this database is now the source of truth, restart walcast once with --new-epoch: the stored history is discarded and every client is told to resync (resync_required); " +
			"if walcast points at the wrong database, fix --database-url",
	}
}

// checkLineage runs before a session streams (and before it creates its
// slot: creating one while the bus holds changes is a divergence too). It
// returns a SetupError when the histories diverge and NewEpoch is off.
func (c *Capture) checkLineage(ctx context.Context, conn *pgconn.PgConn, sys pglogrepl.IdentifySystemResult, slotExists bool) error {
	l := c.cfg.Lineage
	if l == nil {
		return nil
	}
	rec, recorded, top, err := l.Lineage(ctx)
	if err != nil {
		return fmt.Errorf("read the origin of the stored history: %w", err)
	}
	cur := schema.Origin{SystemID: sys.SystemID, Timeline: sys.Timeline, Slot: c.cfg.Slot}
	in := lineageInput{recorded: recorded, rec: rec, cur: cur, top: top, walEnd: uint64(sys.XLogPos), slotExists: slotExists}
	if recorded && rec.Timeline < cur.Timeline && !top.IsZero() {
		in.switchPoint, in.switchKnown, err = timelineSwitch(ctx, conn, cur.Timeline, rec.Timeline)
		if err != nil {
			return err
		}
	}
	reason := diverged(in)
	if reason == "" {
		if !recorded || rec != cur {
			if err := l.SetOrigin(ctx, cur); err != nil {
				return fmt.Errorf("record the origin of the stored history: %w", err)
			}
		}
		return nil
	}
	if !c.cfg.NewEpoch {
		c.log.Error("the database's history does not continue the stored one; refusing to stream", "reason", reason, "stored_up_to", top.String())
		return divergedError(reason)
	}
	c.log.Warn("the database's history does not continue the stored one; starting a new epoch as --new-epoch asks: the stored history is discarded and every client is told to resync",
		"reason", reason, "stored_up_to", top.String())
	if err := l.NewEpoch(ctx, cur, reason); err != nil {
		return fmt.Errorf("start a new epoch: %w", err)
	}
	return nil
}

// lineageInput is what diverged decides on.
type lineageInput struct {
	recorded    bool
	rec, cur    schema.Origin
	top         schema.Position // newest stored position (the bus refuses ids not above it)
	walEnd      uint64          // the database's current WAL flush position
	slotExists  bool
	switchPoint uint64 // where rec.Timeline ended, in cur.Timeline's history
	switchKnown bool
}

// diverged returns why the database's history does not continue the
// stored one, or "" when it does.
func diverged(in lineageInput) string {
	if in.top.IsZero() {
		return "" // nothing stored: nothing to be mistaken for
	}
	top := pglogrepl.LSN(in.top.LSN)
	switch {
	case in.recorded && in.rec.SystemID != in.cur.SystemID:
		return fmt.Sprintf("the stored changes come from database system %s, this database is system %s (another cluster: a new one, or a restore into a new cluster)", in.rec.SystemID, in.cur.SystemID)
	case in.top.LSN >= in.walEnd:
		return fmt.Sprintf("the stored changes reach WAL position %s, beyond this database's WAL end %s (restored from a backup, recovered to an earlier point, or failed over to a standby that lacks them)", top, pglogrepl.LSN(in.walEnd))
	case !in.slotExists:
		return fmt.Sprintf("replication slot %s does not exist but changes up to %s are stored: the changes made since the slot was lost were never read (dropped slot, or a restore or failover that did not keep it)", in.cur.Slot, top)
	case in.recorded && in.rec.Timeline > in.cur.Timeline:
		return fmt.Sprintf("the stored changes were read on timeline %d, this database is on the earlier timeline %d (restored from a backup)", in.rec.Timeline, in.cur.Timeline)
	case in.recorded && in.rec.Timeline < in.cur.Timeline && !in.switchKnown:
		return fmt.Sprintf("the stored changes were read on timeline %d, which is not in the history of this database's timeline %d", in.rec.Timeline, in.cur.Timeline)
	case in.recorded && in.rec.Timeline < in.cur.Timeline && in.top.LSN >= in.switchPoint:
		return fmt.Sprintf("the stored changes reach %s on timeline %d, past %s where this database's timeline %d branched off (a failover or recovery lost them)", top, in.rec.Timeline, pglogrepl.LSN(in.switchPoint), in.cur.Timeline)
	}
	return ""
}

// timelineSwitch returns where timeline old ended in the history of
// timeline cur (TIMELINE_HISTORY), and whether old is in it at all.
func timelineSwitch(ctx context.Context, conn *pgconn.PgConn, cur, old int32) (uint64, bool, error) {
	res, err := pglogrepl.TimelineHistory(ctx, conn, cur)
	if err != nil {
		return 0, false, fmt.Errorf("read the history of timeline %d: %w", cur, err)
	}
	lsn, ok := parseTimelineHistory(string(res.Content), old)
	return lsn, ok, nil
}

// parseTimelineHistory finds the switch point of timeline tli in a
// timeline history file: lines "parentTLI<TAB>switchpoint<TAB>reason".
func parseTimelineHistory(content string, tli int32) (uint64, bool) {
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		id, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil || int32(id) != tli {
			continue
		}
		lsn, err := pglogrepl.ParseLSN(f[1])
		if err != nil {
			return 0, false
		}
		return uint64(lsn), true
	}
	return 0, false
}
