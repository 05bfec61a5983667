package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/launch"
)

// runDrain measures capture on a backlog: with walcast's slot and a
// baseline slot made first, it writes cfg.Rows rows, then starts walcast
// and times how fast walcast_changes_total reaches cfg.Rows; then
// pg_recvlogical drains the baseline slot, which holds the same WAL.
func runDrain(ctx context.Context, cfg *Config, e *env, res *Result) error {
	res.DrainRows, res.TxSize, res.WalcastCmd = cfg.Rows, cfg.TxSize, cfg.WalcastCmd
	recv, err := launch.PGProgram("pg_recvlogical")
	if err != nil {
		return err
	}
	if err := setupDatabase(ctx, e.dbURL, cfg.Committees, true); err != nil {
		return err
	}
	const slot, baseline = "walcast_bench", "walcast_bench_baseline"
	if err := sqlExec(ctx, e.dbURL, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, baseline); err != nil {
		return fmt.Errorf("create slot %s: %w", baseline, err)
	}
	if err := createSlotByWalcast(ctx, cfg, e, slot); err != nil {
		return err
	}
	w := &writer{url: e.dbURL, writers: cfg.Writers, txSize: cfg.TxSize, rowSize: cfg.RowSize, committees: cfg.Committees}
	t0 := time.Now()
	if err := w.run(ctx, 0, 10*time.Minute, int64(cfg.Rows)); err != nil {
		return err
	}
	res.InsertRate = float64(w.rows.Load()) / time.Since(t0).Seconds()
	if w.rows.Load() != int64(cfg.Rows) {
		return fmt.Errorf("writer wrote %d of %d rows in 10 minutes", w.rows.Load(), cfg.Rows)
	}
	end, err := sqlString(ctx, e.dbURL, `SELECT pg_current_wal_lsn()::text`)
	if err != nil {
		return fmt.Errorf("read wal position: %w", err)
	}
	if cfg.RedisFsync == "always" {
		if err := redisFsyncAlways(ctx, e.redisURL); err != nil {
			return err
		}
	}

	started := time.Now()
	srv, err := startServer(ctx, cfg, e, slot)
	if err != nil {
		return err
	}
	defer srv.stop()
	waitProfile := startProfile(ctx, cfg, srv)
	// Poll the counter; the rate is taken from the first poll that saw
	// changes to the one that saw them all, so walcast's start is left out.
	var first time.Time
	var firstN float64
	deadline := time.Now().Add(5 * time.Minute)
	for {
		m, err := srv.metrics(ctx)
		if err != nil {
			return err
		}
		n := m["walcast_changes_total"]
		now := time.Now()
		if n > 0 && first.IsZero() {
			first, firstN = now, n
		}
		if n >= float64(cfg.Rows) {
			if n > firstN {
				res.DrainRate = (n - firstN) / now.Sub(first).Seconds()
			} else {
				res.DrainRate = n / now.Sub(started).Seconds()
			}
			cpu, _ := cpuTime(srv.pid)
			res.CPUPercent = 100 * cpu.Seconds() / now.Sub(started).Seconds()
			break
		}
		if now.After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("walcast captured %.0f of %d rows in 5 minutes", n, cfg.Rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m, err := readMemory(srv.pid); err == nil {
		res.PeakRSS = m.HWM
	}
	if err := waitProfile(); err != nil {
		return err
	}
	_ = srv.stop()

	rs := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, recv, "-d", e.dbURL, "-S", baseline, "--start", "-f", "/dev/null",
		"-o", "proto_version=1", "-o", "publication_names=walcast", "-E", end, "--no-loop")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_recvlogical: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	res.RecvlogicalRate = float64(cfg.Rows) / time.Since(rs).Seconds()
	res.DrainRatio = res.DrainRate / res.RecvlogicalRate
	return nil
}

// createSlotByWalcast starts walcast once on the empty tables and stops
// it: walcast creates its slot and seeds its live state at slot creation
// (nothing to read), as on a first start. A slot made by SQL instead would
// have walcast seed the state from a temporary slot while it drains, over
// the whole backlog: a one-time cost of adopting a populated database
// (BenchmarkStateSync measures it), not capture's. The in-process bus
// keeps its state in memory and seeds it at every start, so its drain
// includes that seed.
func createSlotByWalcast(ctx context.Context, cfg *Config, e *env, slot string) error {
	srv, err := startServer(ctx, cfg, e, slot)
	if err != nil {
		return fmt.Errorf("first start of walcast, to create its slot: %w", err)
	}
	if err := srv.stop(); err != nil {
		return fmt.Errorf("stop walcast after its first start: %w", err)
	}
	return nil
}

// redisFsyncAlways turns the AOF on with a flush on every write, and waits
// for the rewrite that turning it on starts.
func redisFsyncAlways(ctx context.Context, url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		return fmt.Errorf("redis CONFIG SET appendonly yes: %w", err)
	}
	if err := rdb.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		return fmt.Errorf("redis CONFIG SET appendfsync always: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("redis AOF rewrite did not finish within 30s")
}

// runXAdd is the bus baseline: a pipelined XADD loop of walcast-sized
// messages, 1, 10 and 100 per round trip, without and with appendfsync
// always, each for cfg.Duration.
func runXAdd(ctx context.Context, cfg *Config, url string, res *Result) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	const key = "walcast-bench:xadd"
	frame := string(sampleFrame(nil, 1, time.Now(), cfg.RowSize))
	for _, fsync := range []string{"no", "always"} {
		if fsync == "always" {
			if err := redisFsyncAlways(ctx, url); err != nil {
				return err
			}
		}
		for _, batch := range []int{1, 10, 100} {
			if err := rdb.Del(ctx, key).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			n := 0
			start := time.Now()
			for time.Since(start) < cfg.Duration && ctx.Err() == nil {
				pipe := rdb.Pipeline()
				for range batch {
					pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: 100_000, Approx: true,
						Values: []any{"m", frame, "t", "guarantee_update", "c", "1"}})
				}
				if _, err := pipe.Exec(ctx); err != nil {
					return fmt.Errorf("redis XADD: %w", err)
				}
				n += batch
			}
			res.XAdd = append(res.XAdd, XAddResult{Batch: batch, Fsync: fsync, Rate: float64(n) / time.Since(start).Seconds()})
		}
	}
	_ = rdb.ConfigSet(ctx, "appendonly", "no").Err()
	return rdb.Del(ctx, key).Err()
}
