package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/testenv"
)

var (
	syncRows    = flag.Int("sync-rows", seedRows, "BenchmarkStateSync: guarantee rows in the database")
	syncClients = flag.Int("sync-clients", 1000, "BenchmarkStateSync: clients that sync at once in the second measurement; 0: measure the seed and memory only")
)

// BenchmarkStateSync measures the live state of a database holding
// 100,000 guarantee rows (-sync-rows) with `walcast run` on Redis: the
// seed at first start, Redis memory per row, and the time a sync of every
// row takes for one admin client, then for -sync-clients admin clients at
// once (each receives every row; the clients run in the test process, on
// the same cores as walcast and Redis).
//
//	go test ./cmd/walcast -run '^$' -bench StateSync -benchtime 1x -sync-clients 1000
//	go test ./cmd/walcast -run '^$' -bench StateSync -benchtime 1x -sync-clients 0   # seed and memory only
func BenchmarkStateSync(b *testing.B) {
	rows := *syncRows
	pg := seededDB(b, rows)
	rd := testenv.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	before := usedMemory(b, rdb)
	start := time.Now()
	app := startApp(b, testConfig(b, pg.URL(), "--redis-url", rd.URL(), "--dashboard-interval", "0",
		"--connect-rate", "100000", "--max-connections", "100000"))
	app.waitStreaming(b)
	var st broadcast.StateStatus
	for deadline := time.Now().Add(5 * time.Minute); !st.Ready; time.Sleep(20 * time.Millisecond) {
		_, st, _ = stateGuarantees(b, rd.URL())
		if time.Now().After(deadline) {
			b.Fatal("state not ready within 5 minutes")
		}
	}
	seeded := time.Since(start)
	perRow := float64(usedMemory(b, rdb)-before) / float64(rows)
	g := st.Tables["public.guarantee"]
	b.Logf("seeded %d rows in %s (start to ready); Redis used_memory %.0f bytes per row (the state counts %d bytes of key and data per row)",
		rows, seeded.Round(time.Millisecond), perRow, g.Bytes/max(g.Rows, 1))
	b.ResetTimer()
	metrics := map[string]float64{"s/seed": seeded.Seconds(), "B/row": perRow}
	for i := 0; i < b.N && *syncClients > 0; i++ {
		for _, n := range []int{1, *syncClients} {
			took, retries := syncAll(b, app.addr, n, rows)
			metrics[fmt.Sprintf("s/sync-%d-clients", n)] = took.Seconds()
			b.Logf("sync of %d rows to %d clients at once: %s (%d synced again after walcast closed them as too slow)",
				rows, n, took.Round(time.Millisecond), retries)
		}
	}
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
}

// usedMemory is Redis's used_memory.
func usedMemory(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no used_memory in INFO memory")
	return 0
}

// syncAll connects n admin clients at once with ?sync=all and returns how
// long until the last one received state_end, each having received
// every one of rows. A client whose connection is closed (walcast closes
// a connection whose write hung for 10 s: with a thousand clients in this
// process, some are not scheduled for that long) syncs again, as
// client.js does; retries says how many did.
func syncAll(b *testing.B, addr string, n, rows int) (took time.Duration, retries int64) {
	start := time.Now()
	var wg sync.WaitGroup
	var again atomic.Int64
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		tok := token(b, int64(i+1), "admin")
		wg.Go(func() {
			for attempt := 1; ; attempt++ {
				got, err := syncOnce(addr, tok)
				switch {
				case err != nil && attempt < 10:
					again.Add(1)
					continue
				case err != nil:
					errs <- err
				case got != rows:
					errs <- fmt.Errorf("client synced %d rows, want %d", got, rows)
				}
				return
			}
		})
	}
	wg.Wait()
	took = time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return took, again.Load()
}

// syncOnce opens a connection with ?sync=all and counts the guarantee rows
// of the state frames until state_end. It counts without decoding the
// rows, so that the clients, which share the machine with walcast, cost
// little: a state frame's rows each start with {"key": (the guarantee
// rows' data has no nested object with such a key).
func syncOnce(addr, tok string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?token=%s&sync=all", addr, tok), nil)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)
	rows := 0
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return rows, fmt.Errorf("read after %d rows: %w", rows, err)
		}
		switch {
		case bytes.HasPrefix(b, []byte(`{"type":"state","table":"public.guarantee"`)):
			rows += bytes.Count(b, []byte(`{"key":`))
		case bytes.HasPrefix(b, []byte(`{"type":"state_end"`)):
			return rows, nil
		case bytes.HasPrefix(b, []byte(`{"type":"error"`)):
			return rows, fmt.Errorf("error frame: %s", b)
		}
	}
}
