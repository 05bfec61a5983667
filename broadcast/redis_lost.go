package broadcast

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/schema"
)

// A failover can promote a replica that lacks the newest entries. Entries
// capture had not counted as stored are harmless: they were not confirmed,
// capture appends them again from WAL with the same ids, and the ones the
// replica did hold are skipped as "equal or smaller". Entries it had
// counted as stored are lost for good when --redis-min-replicas is 0:
// their slot position is confirmed, PostgreSQL will not send them again,
// and the new primary would take the next appends after a hole, which a
// client resuming in it would never notice.
//
// So the bus remembers the newest entry it counted as stored, and every
// append script first checks that the stream reaches it (appendScript). A
// stream that does not, for lostGrace, lost confirmed entries: the bus
// starts a new epoch (the stream is discarded and every serve replica
// tells its clients to resync, see redis_epoch.go), then appends. The
// memory is the process's: a capture restarted after such a loss cannot
// see it, and the serve replicas' own check (caughtUp) is what is left.

// lostPrefix begins the append script's error for a stream that does not
// reach the newest entry stored.
const lostPrefix = "WALCAST_LOST"

// lostGrace is how long a primary must keep lacking entries stored before
// capture starts a new epoch. Right after a failover a connection may
// still reach the old primary, restarted empty, when the Sentinel asked
// had not yet learnt of the failover; the Sentinels agree within a few
// seconds, and the next attempts reach the new primary, which may hold
// everything.
const lostGrace = 2 * time.Second

// storedPos is the newest entry the bus counted as stored, and since when
// appends find the primary without it; capture's appends are serialized,
// the lock is for tests and metrics readers.
type storedPos struct {
	mu        sync.Mutex
	pos       schema.Position
	lostSince time.Time
}

// storedUpTo records that entries up to pos are stored.
func (b *RedisBus) storedUpTo(pos schema.Position) {
	b.stored.mu.Lock()
	if b.stored.pos.Less(pos) {
		b.stored.pos = pos
	}
	b.stored.lostSince = time.Time{}
	b.stored.mu.Unlock()
}

// lostFor returns how long appends have found the primary without the
// newest entry stored, counting from now when this is the first time.
func (b *RedisBus) lostFor() time.Duration {
	b.stored.mu.Lock()
	defer b.stored.mu.Unlock()
	if b.stored.lostSince.IsZero() {
		b.stored.lostSince = time.Now()
	}
	return time.Since(b.stored.lostSince)
}

// storedFloor is the append script's ARGV[2]: the newest id stored, "" for
// none.
func (b *RedisBus) storedFloor() string {
	b.stored.mu.Lock()
	defer b.stored.mu.Unlock()
	if b.stored.pos.IsZero() {
		return ""
	}
	return b.stored.pos.String()
}

// forgetStored forgets the newest entry stored: the stream was discarded.
func (b *RedisBus) forgetStored() {
	b.stored.mu.Lock()
	b.stored.pos, b.stored.lostSince = schema.Position{}, time.Time{}
	b.stored.mu.Unlock()
}

// recoverLoss handles the append script's lostPrefix error from node (see
// Append): once the primary has lacked the entries for lostGrace, it
// starts a new epoch and appends msgs to the new stream; until then it
// returns an error, and capture retries.
func (b *RedisBus) recoverLoss(ctx context.Context, node redis.UniversalClient, lost error, msgs []schema.Message) error {
	floor := b.storedFloor()
	ends := "?"
	if i := strings.Index(lost.Error(), lostPrefix+" "); i >= 0 {
		ends = lost.Error()[i+len(lostPrefix)+1:]
	}
	if b.lostFor() < lostGrace {
		return fmt.Errorf("the redis primary's stream ends at %s, before %s, the newest entry stored; a new epoch begins if it still does in %s: %w", ends, floor, lostGrace, lost)
	}
	b.log.Error("the redis primary lacks changes capture had already confirmed (a failover to a replica that had not received them): starting a new epoch, every client must resync. Run with --redis-min-replicas 1 and a replica to keep them across a failover",
		"stored_up_to", floor, "primary_ends_at", ends)
	stored, _ := schema.ParsePosition(floor)
	reason := fmt.Sprintf("redis lost confirmed changes after %s (a failover to a replica that lacked them)", ends)
	if err := b.discard(ctx, nil, stored, reason); err != nil {
		return err
	}
	return b.appendOnce(ctx, node, msgs)
}
