package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// A primary that lacks entries the bus counted as stored (a failover to a
// replica that had not received them) is never appended to after the
// hole: the bus begins a new epoch, so that every client resyncs, and
// then appends. Entries the bus had not counted as stored, appended again
// by a fresh bus (capture re-reading WAL), are no loss.
func TestRedisAppendAfterLostEntriesBeginsAnEpoch(t *testing.T) {
	ctx := context.Background()
	rd := testenv.StartRedis(t)
	bus := newTestRedisBus(t, rd.URL(), 1000)
	if err := bus.Append(ctx, msgs(lsns(1, 10)...)); err != nil {
		t.Fatal(err)
	}
	epoch0, _, err := bus.epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The "new primary" holds entries 1..5 only.
	truncate := func() {
		t.Helper()
		if err := bus.rdb.Del(ctx, bus.key).Err(); err != nil {
			t.Fatal(err)
		}
		other := newTestRedisBus(t, rd.URL(), 1000)
		if err := other.Append(ctx, msgs(lsns(1, 5)...)); err != nil {
			t.Fatal(err)
		}
	}
	truncate()

	// A fresh bus never counted 6..10 as stored: appending them again
	// fills the stream without a new epoch.
	fresh := newTestRedisBus(t, rd.URL(), 1000)
	if err := fresh.Append(ctx, msgs(lsns(6, 12)...)); err != nil {
		t.Fatal(err)
	}
	if ep, _, _ := bus.epoch(ctx); ep != epoch0 {
		t.Fatalf("epoch %q after appending unconfirmed entries again, want %q unchanged", ep, epoch0)
	}

	truncate()
	// The first appends fail: the bus gives the primary lostGrace to be
	// the one that holds them.
	began := time.Now()
	if err := bus.Append(ctx, msgs(lsns(13, 14)...)); err == nil {
		t.Fatal("appended after the hole at once")
	}
	waitFor(t, "an append after the loss", func() bool { return bus.Append(ctx, msgs(lsns(13, 14)...)) == nil })
	if took := time.Since(began); took < lostGrace {
		t.Errorf("a new epoch after %v, before lostGrace", took)
	}
	ep, earlier, err := bus.epoch(ctx)
	if err != nil || ep == epoch0 {
		t.Fatalf("epoch %q (%v) after the loss, want a new one (was %q)", ep, err, epoch0)
	}
	if earlier.Less(schema.Position{LSN: 10}) {
		t.Errorf("ids up to %s belong to an earlier epoch, want at least 10-0", earlier)
	}
	got, err := bus.Since(ctx, schema.Position{}, 100)
	if err != nil || !slices.Equal(positionsOf(got), lsns(13, 14)) {
		t.Errorf("the new epoch holds %v (%v), want 13..14", positionsOf(got), err)
	}
	if _, err := bus.Since(ctx, schema.Position{LSN: 7}, 100); !errors.Is(err, ErrTooOld) {
		t.Errorf("resume from a lost id: %v, want ErrTooOld", err)
	}
}

// lockedLog is a log a test can search while the bus writes to it.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// A follower that read entries a failover took back waits for them
// instead of telling its clients to resync: appended again with the same
// ids, they are no loss. When the stream comes back without the last entry
// it sent, its clients are told to resync: never a silent gap.
func TestRedisFollowerWaitsForEntriesAFailoverTookBack(t *testing.T) {
	for _, reappended := range []bool{true, false} {
		t.Run(fmt.Sprintf("reappended=%v", reappended), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rd := testenv.StartRedis(t)
			log := &lockedLog{}
			follower, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 1000, Logger: slog.New(slog.NewTextHandler(log, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer follower.Close()
			hub := NewHub(1000)
			done := make(chan struct{})
			go func() { defer close(done); _ = follower.Follow(ctx, hub) }()
			defer func() { cancel(); <-done }()
			published := func(n uint64) func() bool { return func() bool { return hub.Stats().Published == n } }
			waitFor(t, "the follower reads the stream", func() bool { return log.has("following stream") })
			// 10-1 is a dashboard: it may vanish for good, and is not looked for.
			sent := msgs(append(lsns(1, 10), schema.Position{LSN: 10, Seq: 1})...)
			sent[10].DashboardKey = "admin"
			if err := newTestRedisBus(t, rd.URL(), 1000).Append(ctx, sent); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "11 published", published(11))

			// The "new primary" holds 1..5: 6..10-1 gone, its last id 5-0.
			_, err = follower.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.XDel(ctx, follower.key, "6-0", "7-0", "8-0", "9-0", "10-0", "10-1")
				p.Do(ctx, "XSETID", follower.key, "5-0", "ENTRIESADDED", 5, "MAXDELETEDID", "0-0")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the follower sees the stream end before what it read", func() bool { return log.has("ends before the last entry") })
			from := uint64(6) // capture re-reads WAL from its confirmed position
			if !reappended {
				from = 11 // another capture, which had confirmed 6..10
			}
			if err := newTestRedisBus(t, rd.URL(), 1000).Append(ctx, msgs(lsns(from, 12)...)); err != nil {
				t.Fatal(err)
			}
			if reappended {
				waitFor(t, "11 and 12 published, nothing else", published(13))
				if !log.has("nothing was lost") {
					t.Error("the follower did not check the last entry it read")
				}
			} else {
				waitFor(t, "a resync, then 11 and 12", published(14))
			}
			time.Sleep(200 * time.Millisecond) // a window for a wrong publish to show
			if got := hub.Stats().Published; got != 13 && reappended || got != 14 && !reappended {
				t.Errorf("published %d", got)
			}
		})
	}
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
