package broadcast

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// newTestRedisBus returns a bus on url keeping history entries.
func newTestRedisBus(t *testing.T, url string, history int) *RedisBus {
	t.Helper()
	bus, err := NewRedisBus(RedisConfig{URL: url, History: history, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	return bus
}

// lsns returns the positions from..to (LSNs, inclusive).
func lsns(from, to uint64) []schema.Position {
	var ps []schema.Position
	for l := from; l <= to; l++ {
		ps = append(ps, schema.Position{LSN: l})
	}
	return ps
}

// positionsOf returns the positions of ms.
func positionsOf(ms []*schema.Message) []schema.Position {
	var ps []schema.Position
	for _, m := range ms {
		ps = append(ps, m.Pos)
	}
	return ps
}

// Re-appending positions already stored (a change re-read from WAL after
// a crash) stores nothing twice, whatever the messages say now, and the
// new positions among them are stored once, in order.
func TestRedisAppendIsIdempotent(t *testing.T) {
	ctx := context.Background()
	bus := newTestRedisBus(t, testenv.StartRedis(t).URL(), 1000)
	if err := bus.Append(ctx, msgs(lsns(1, 10)...)); err != nil {
		t.Fatal(err)
	}
	again := msgs(lsns(5, 15)...)
	for i := range again {
		again[i].Type = "changed_on_replay"
	}
	if err := bus.Append(ctx, again); err != nil {
		t.Fatalf("re-append: %v", err)
	}
	if err := bus.Append(ctx, again); err != nil {
		t.Fatalf("re-append twice: %v", err)
	}
	if n, err := bus.rdb.XLen(ctx, bus.key).Result(); err != nil || n != 15 {
		t.Fatalf("stream holds %d entries (%v), want 15", n, err)
	}
	got, err := bus.Since(ctx, schema.Position{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if want := lsns(1, 15); !slices.Equal(positionsOf(got), want) {
		t.Fatalf("stored %v, want %v", positionsOf(got), want)
	}
	for _, m := range got {
		want := schema.TypeGuarantee // what msgs stores
		if m.Pos.LSN > 10 {
			want = "changed_on_replay"
		}
		if m.Type != want {
			t.Errorf("entry %s has type %q, want %q (the first append of a position wins)", m.Pos, m.Type, want)
		}
	}
}

// Since answers what follows a position, bounded by limit; a position the
// stream never reached is unknown (on a stream that does not exist too),
// and one whose followers were trimmed is too old.
func TestRedisSinceUnknownAndTooOld(t *testing.T) {
	ctx := context.Background()
	bus := newTestRedisBus(t, testenv.StartRedis(t).URL(), 100)
	p := func(l uint64) schema.Position { return schema.Position{LSN: l} }
	if got, err := bus.Since(ctx, schema.Position{}, 10); err != nil || len(got) != 0 {
		t.Errorf("Since(0-0) without a stream = %v, %v; want nothing", got, err)
	}
	if _, err := bus.Since(ctx, p(3), 10); !errors.Is(err, ErrUnknownPosition) {
		t.Errorf("Since(3-0) without a stream = %v, want ErrUnknownPosition", err)
	}
	if err := bus.Append(ctx, msgs(lsns(1, 50)...)); err != nil {
		t.Fatal(err)
	}
	got, err := bus.Since(ctx, p(10), 5)
	if want := lsns(11, 15); err != nil || !slices.Equal(positionsOf(got), want) {
		t.Errorf("Since(10-0, 5) = %v, %v; want %v", positionsOf(got), err, want)
	}
	if got, err := bus.Since(ctx, p(50), 5); err != nil || len(got) != 0 {
		t.Errorf("Since(the head) = %v, %v; want nothing", positionsOf(got), err)
	}
	if _, err := bus.Since(ctx, p(51), 5); !errors.Is(err, ErrUnknownPosition) {
		t.Errorf("Since(past the head) = %v, want ErrUnknownPosition", err)
	}
	if err := bus.Append(ctx, msgs(lsns(51, 2000)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Since(ctx, p(10), 5); !errors.Is(err, ErrTooOld) {
		t.Errorf("Since(a trimmed position) = %v, want ErrTooOld", err)
	}
	if got, err := bus.Since(ctx, p(1990), 100); err != nil || !slices.Equal(positionsOf(got), lsns(1991, 2000)) {
		t.Errorf("Since(1990-0) after the trim = %v, %v; want 1991..2000", positionsOf(got), err)
	}
}

// A replica's follower survives Redis being killed and restarted (with
// its AOF): it continues after the last entry it read, and a client of
// its hub receives every entry once, in order.
func TestRedisFollowResumesAfterAnOutage(t *testing.T) {
	rd := testenv.StartRedis(t, testenv.WithAOF())
	r := startReplica(t, rd.URL())
	ctx := context.Background()
	appendRange := func(from, to uint64) {
		t.Helper()
		var ms []schema.Message
		for _, p := range lsns(from, to) {
			ms = append(ms, schema.Message{Pos: p, Type: schema.TypeVoting, JSON: []byte(fmt.Sprintf(`{"id":%q,"tag":"%d"}`, p, p.LSN))})
		}
		// Appends are idempotent: after the restart, retry until Redis
		// answers on a new connection.
		deadline := time.Now().Add(10 * time.Second)
		for err := r.bus.Append(ctx, ms); err != nil; err = r.bus.Append(ctx, ms) {
			if time.Now().After(deadline) {
				t.Fatalf("append %d..%d: %v", from, to, err)
			}
			time.Sleep(50 * time.Millisecond) // polling for Redis, not waiting it out
		}
	}
	// The follower runs once the hub received a first entry.
	appendRange(1, 1)
	if !eventually(10*time.Second, func() bool { return r.hub.Stats().Published > 0 }) {
		t.Fatal("the replica does not follow the stream")
	}
	c := dialProbe(t, r.url, "admin", mint(t, 1, RoleAdmin), "")
	appendRange(2, 20)
	tagIs := func(tag string) func([]byte) bool { return func(f []byte) bool { return frameJSON(f)["tag"] == tag } }
	got := tags(c.until(tagIs("20")))

	rd.Kill(t)
	rd.Start(t)
	appendRange(21, 40)
	got = append(got, tags(c.until(tagIs("40")))...)
	var want []string
	for l := 2; l <= 40; l++ {
		want = append(want, fmt.Sprint(l))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the client received %s, want 2..40 once each", strings.Join(got, ","))
	}
}

// Presence across two replicas sharing a real Redis: a user joining or
// leaving on one is seen on the other, and the users of a replica cut off
// from Redis (a crash, as Redis sees it) vanish from the other after the
// presence TTL.
func TestPresenceJoinLeaveAndLossAcrossReplicas(t *testing.T) {
	rd := testenv.StartRedis(t)
	cut := testenv.StartProxy(t, rd.Addr())
	const ttl = time.Second
	ra := startReplicaTTL(t, "redis://"+cut.Addr()+"/0", ttl)
	rb := startReplicaTTL(t, rd.URL(), ttl)
	online := func(r *replica, user int64, want bool, what string) {
		t.Helper()
		if !eventually(10*time.Second, func() bool { return slices.Contains(r.pr.Online(), user) == want }) {
			t.Fatalf("%s: user %d online on the other replica = %v after 10 s", what, user, !want)
		}
	}
	a := dialProbe(t, ra.url, "a", mint(t, 10, "", 5), "")
	a.send(`{"type":"presence","viewing":"x"}`)
	online(rb, 10, true, "join")
	a.conn.CloseNow()
	online(rb, 10, false, "leave")

	b := dialProbe(t, ra.url, "b", mint(t, 11, "", 5), "")
	b.send(`{"type":"presence","viewing":"y"}`)
	online(rb, 11, true, "join")
	began := time.Now()
	cut.Close()
	online(rb, 11, false, "replica cut off")
	t.Logf("the users of a replica cut off vanished after %v (ttl %v)", time.Since(began).Round(time.Millisecond), ttl)
	if !slices.Contains(ra.pr.Online(), 11) {
		t.Error("the replica cut off forgot its own user")
	}
}
