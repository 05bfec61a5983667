package broadcast

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/netguard"
	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// Commands on connections that went silent do not hang: each answers
// within about the Redis timeout, on a new connection (go-redis retries a
// pipeline that timed out) or with a timeout error that replaces the pool's
// connections (counted); nothing stored is lost and the next command works.
func TestRedisCommandsOnSilentConnectionsAreReplaced(t *testing.T) {
	rd := testenv.StartRedis(t)
	proxy := testenv.StartProxy(t, rd.Addr())
	var mu sync.Mutex
	replaced := map[string]int{}
	const timeout = 500 * time.Millisecond
	bus, err := NewRedisBus(RedisConfig{URL: "redis://" + proxy.Addr() + "/0", History: 1000, Logger: discard(),
		Timeout: timeout, Transport: netguard.Defaults(),
		OnReplaced: func(conn, reason string) { mu.Lock(); replaced[conn+"/"+reason]++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	msg := func(lsn uint64) []schema.Message {
		return []schema.Message{{Pos: schema.Position{LSN: lsn}, Type: schema.TypeGuarantee, JSON: []byte(`{}`)}}
	}
	ctx := context.Background()
	if err := bus.Append(ctx, msg(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Head(ctx); err != nil {
		t.Fatal(err)
	}
	for lsn := uint64(2); lsn <= 3; lsn++ {
		if n := proxy.Silence(); n == 0 {
			t.Fatal("no connection to silence")
		}
		began := time.Now()
		err := bus.Append(ctx, msg(lsn))
		t.Logf("append %d on a silent pool: %v after %v", lsn, err, time.Since(began).Round(time.Millisecond))
		if err != nil && !netguard.IsTimeout(err) {
			t.Fatalf("append: %v, want success or a timeout", err)
		}
		if took := time.Since(began); took > 4*timeout {
			t.Errorf("append took %v with a %v timeout", took, timeout)
		}
		if err != nil {
			if err := bus.Append(ctx, msg(lsn)); err != nil {
				t.Fatalf("append again: %v", err)
			}
		}
		proxy.Silence()
		began = time.Now()
		_, err = bus.Head(ctx)
		t.Logf("head on a silent pool: %v after %v", err, time.Since(began).Round(time.Millisecond))
		if err != nil && !netguard.IsTimeout(err) {
			t.Fatalf("head: %v", err)
		}
	}
	head, err := bus.Head(ctx)
	if err != nil || head != (schema.Position{LSN: 3}) {
		t.Fatalf("head = %v, %v; want 3-0 (every append stored once)", head, err)
	}
	if !bus.Healthy() {
		t.Error("not healthy after good commands")
	}
	mu.Lock()
	t.Logf("replaced: %v; connections opened: %d", replaced, proxy.Accepted())
	if replaced["redis/timeout"] < 1 {
		t.Errorf("no replacement counted: %v", replaced)
	}
	mu.Unlock()
}
