package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/launch"
)

// env is what one run started: the database, Redis and a scratch folder.
type env struct {
	dir      string
	dbURL    string
	redisURL string
	secret   string
	pg       *launch.Postgres
	redis    *launch.Redis
	replicas []*launch.Redis // of redis (--redis-replicas)
}

// pgSettings go on top of the launcher's own (wal_level=logical, fsync and
// full_page_writes off: what is measured is decoding and delivery, not the
// disk): room for the benchmark's slots and its many writers.
var pgSettings = [][2]string{
	{"max_replication_slots", "16"},
	{"max_wal_senders", "16"},
	{"max_connections", "200"},
}

// newEnv starts what cfg needs and is not given.
func newEnv(ctx context.Context, cfg *Config, workdir string) (_ *env, err error) {
	e := &env{dir: workdir, dbURL: cfg.DatabaseURL, redisURL: cfg.RedisURL, secret: cfg.JWTSecret}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.secret == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		e.secret = hex.EncodeToString(b)
	}
	if cfg.Target != "" {
		return e, nil
	}
	needPG := cfg.Mode != "xadd" && cfg.Mode != "serve-tier" && cfg.Server == "walcast"
	needRedis := cfg.Mode == "xadd" || (cfg.Bus == "redis" && cfg.Server == "walcast")
	if needPG && e.dbURL == "" {
		if e.pg, err = launch.StartPostgres(ctx, launch.PostgresConfig{Name: "bench", Settings: pgSettings, Fresh: true}); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
		e.dbURL = e.pg.URL()
	}
	if needRedis && e.redisURL == "" {
		if e.redis, err = launch.StartRedis(ctx, launch.RedisConfig{Args: []string{"--maxclients", "1000"}}); err != nil {
			return nil, fmt.Errorf("start redis: %w", err)
		}
		e.redisURL = e.redis.URL()
		for range cfg.RedisReplicas {
			r, err := launch.StartRedis(ctx, launch.RedisConfig{ReplicaOf: e.redis.Addr()})
			if err != nil {
				return nil, fmt.Errorf("start redis replica: %w", err)
			}
			e.replicas = append(e.replicas, r)
		}
		if err := waitReplicasOnline(ctx, e.redis.Addr(), len(e.replicas)); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// waitReplicasOnline waits until the primary at addr streams to n
// replicas (their first sync done).
func waitReplicasOnline(ctx context.Context, addr string, n int) error {
	if n == 0 {
		return nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err == nil && strings.Count(info, ",state=online,") >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis replicas not in sync after a minute: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *env) close() {
	for _, r := range e.replicas {
		if err := r.Close(); err != nil {
			slog.Warn("stop redis replica", "err", err)
		}
	}
	if e.redis != nil {
		if err := e.redis.Close(); err != nil {
			slog.Warn("stop redis", "err", err)
		}
	}
	if e.pg != nil {
		if err := e.pg.Close(); err != nil {
			slog.Warn("stop postgres", "err", err)
		}
	}
}

// run performs one benchmark run.
func run(ctx context.Context, cfg *Config, workdir, command string) (*Result, error) {
	res := &Result{Label: cfg.Label, Command: command, Started: time.Now().UTC().Truncate(time.Second), Mode: cfg.Mode,
		RowSize: cfg.RowSize, RedisFsync: cfg.RedisFsync, RedisReplicas: cfg.RedisReplicas}
	if cfg.Mode != "xadd" {
		res.Bus, res.Server = cfg.Bus, cfg.Server
	}
	e, err := newEnv(ctx, cfg, workdir)
	if err != nil {
		return nil, err
	}
	defer e.close()
	switch cfg.Mode {
	case "xadd":
		err = runXAdd(ctx, cfg, e.redisURL, res)
	case "drain":
		err = runDrain(ctx, cfg, e, res)
	case "idle":
		err = runIdle(ctx, cfg, e, res)
	case "serve-tier":
		err = runServeTier(ctx, cfg, e, res)
	default:
		err = runLive(ctx, cfg, e, res)
	}
	res.LoadAvg = loadAverage()
	return res, err
}

// startServer starts the server cfg asks for, or points at --target.
func startServer(ctx context.Context, cfg *Config, e *env, slot string) (*server, error) {
	switch {
	case cfg.Target != "":
		return remoteServer(strings.TrimRight(cfg.Target, "/")), nil
	case cfg.Server == "minimal":
		return startMinimal(ctx, cfg, e.dir)
	default:
		redisURL := ""
		if cfg.Bus == "redis" {
			redisURL = e.redisURL
		}
		return startWalcast(ctx, cfg, e.dir, e.dbURL, redisURL, slot, e.secret)
	}
}

// runLive connects the clients, writes at the asked rate for the asked
// time, waits for the last deliveries and reports.
func runLive(ctx context.Context, cfg *Config, e *env, res *Result) error {
	res.Clients, res.Scope, res.Committees, res.Rate, res.TxSize = cfg.Clients, cfg.Scope, cfg.Committees, cfg.Rate, cfg.TxSize
	if cfg.Server == "walcast" {
		if err := setupDatabase(ctx, e.dbURL, cfg.Committees, cfg.Target == ""); err != nil {
			return err
		}
	}
	srv, err := startServer(ctx, cfg, e, "walcast")
	if err != nil {
		return err
	}
	defer srv.stop()
	pool := &clientPool{}
	secret := []byte(e.secret)
	if err := pool.connect(ctx, srv.ws, cfg.Clients, func(i int) (string, error) {
		return tokenFor(secret, i, cfg.Scope, cfg.Committees)
	}, 5*time.Minute); err != nil {
		return err
	}
	runCtx, stopClients := context.WithCancel(ctx)
	pool.start(runCtx)
	defer func() {
		stopClients()
		pool.closeAll()
	}()

	m0, err := srv.metrics(ctx)
	if err != nil {
		return err
	}
	cpu := startCPU(srv.pid)
	self := startCPU(os.Getpid())
	start := time.Now()
	waitProfile := startProfile(ctx, cfg, srv)
	sm := &sampler{cfg: cfg, srv: srv, start: start, scrapeCtx: ctx}
	sampled := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		sm.run(sampleCtx)
	}()

	w := &writer{url: e.dbURL, writers: cfg.Writers, txSize: cfg.TxSize, rowSize: cfg.RowSize, committees: cfg.Committees}
	if cfg.Server == "minimal" {
		err = startPublishing(ctx, srv, cfg.Rate, cfg.Duration)
		if err == nil {
			select {
			case <-time.After(cfg.Duration):
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
	} else {
		err = w.run(ctx, cfg.Rate, cfg.Duration, 0)
	}
	writeTime := time.Since(start)
	stopSampling()
	<-sampled
	if err != nil {
		return err
	}
	if cfg.HeapProfile != "" {
		// The end of writing: the load is still on, the last deliveries
		// still under way.
		if err := sm.takeHeap(ctx, cfg.Duration); err != nil {
			return err
		}
	}
	if err := waitProfile(); err != nil {
		return err
	}

	// Wait for the tail: until every expected delivery arrived, or none
	// arrived for a second (bounded at 30 s).
	var expected int64
	m1 := m0
	deadline := time.Now().Add(30 * time.Second)
	prev, still := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if m1, err = srv.metrics(ctx); err != nil {
			return err
		}
		changes := int64(m1["walcast_changes_total"] - m0["walcast_changes_total"])
		if cfg.Server == "walcast" {
			changes = w.rows.Load()
		}
		expected = expectedDeliveries(changes, cfg)
		got, _ := pool.deliveries()
		if got >= expected {
			break
		}
		if got != prev {
			prev, still = got, time.Now()
		} else if time.Since(still) > time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, last := pool.deliveries()
	window := writeTime
	if d := last.Sub(start); d > window {
		window = d
	}
	cpuUsed, pct := cpu.stop()
	_, selfPct := self.stop()

	lat := pool.latency()
	res.WindowSec = window.Seconds()
	res.RowsWritten = w.rows.Load()
	if cfg.Server == "minimal" {
		res.RowsWritten = int64(m1["walcast_changes_total"] - m0["walcast_changes_total"])
	}
	res.WriteRate = float64(res.RowsWritten) / writeTime.Seconds()
	res.LatencyP50Ms = msOf(lat.Quantile(0.50))
	res.LatencyP95Ms = msOf(lat.Quantile(0.95))
	res.LatencyP99Ms = msOf(lat.Quantile(0.99))
	res.LatencyMaxMs = msOf(lat.Max())
	if pool.split.fromCommit.Count() > 0 {
		res.CommitP50Ms, res.CommitP99Ms = msOf(pool.split.toCommit.Quantile(0.50)), msOf(pool.split.toCommit.Quantile(0.99))
		res.AfterCommitP50, res.AfterCommitP99 = msOf(pool.split.fromCommit.Quantile(0.50)), msOf(pool.split.fromCommit.Quantile(0.99))
	}
	res.ChangesPerSec = (m1["walcast_changes_total"] - m0["walcast_changes_total"]) / window.Seconds()
	res.Deliveries, res.ExpectedDeliveries = got, expected
	res.DeliveriesPerSec = float64(got) / window.Seconds()
	res.ServerDeliveries = (m1["walcast_deliveries_total"] - m0["walcast_deliveries_total"]) / window.Seconds()
	res.CPUPercent, res.BenchCPUPercent = pct, selfPct
	if got > 0 {
		res.CPUMicrosPerDeliv = float64(cpuUsed.Microseconds()) / float64(got)
	}
	if srv.pid != 0 {
		if m, err := readMemory(srv.pid); err == nil {
			res.PeakRSS, res.EndRSS = m.HWM, m.RSS
		}
	}
	res.Resumes = pool.resumed.Load()
	res.FailedClients = pool.stopped.Load()
	if len(sm.samples) > 0 {
		res.RSSSamples, res.WarmupSec = sm.samples, cfg.Warmup.Seconds()
		spread, flat, ok := rssFlatness(sm.samples, cfg.Warmup)
		res.RSSSpreadPct = spread
		if ok {
			res.RSSFlat = &flat
		}
	}
	if sm.heapErr != nil {
		return sm.heapErr
	}
	return heapTops(ctx, res, sm.heaps)
}

// sampler reads the walcast child's RSS (and, when it has an internal
// listener, its Go runtime's memory figures) every cfg.Sample, and takes
// the heap profile of the end of the warm-up (--heap-profile).
type sampler struct {
	cfg     *Config
	srv     *server
	start   time.Time
	samples []RSSSample
	heaps   []HeapProfile
	heapErr error
	// scrapeCtx is the run's: a scrape under way when sampling stops
	// completes, so the last sample keeps its runtime figures.
	scrapeCtx context.Context
}

// run samples until ctx ends; samples and heaps are the caller's once it
// returns.
func (sm *sampler) run(ctx context.Context) {
	if sm.cfg.Sample <= 0 || sm.srv.pid == 0 {
		return
	}
	t := time.NewTicker(sm.cfg.Sample)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := readMemory(sm.srv.pid)
		if err != nil {
			continue
		}
		x := RSSSample{Sec: time.Since(sm.start).Seconds(), RSS: m.RSS}
		if sm.srv.internal != "" {
			if rt, err := readRuntimeMem(sm.scrapeCtx, sm.srv); err == nil {
				x.HeapInuse, x.HeapIdle, x.HeapReleased, x.Stacks, x.GCGoal, x.GoSys, x.Goroutines =
					rt.HeapInuse, rt.HeapIdle, rt.HeapReleased, rt.Stacks, rt.GCGoal, rt.Sys, rt.Goroutines
			}
		}
		sm.samples = append(sm.samples, x)
		// The first profile right after the warm-up's last sample: the
		// point from which RSS should stay flat.
		if sm.cfg.HeapProfile != "" && len(sm.heaps) == 0 && sm.heapErr == nil && x.Sec >= sm.cfg.Warmup.Seconds() {
			sm.heapErr = sm.takeHeap(sm.scrapeCtx, sm.cfg.Warmup)
		}
	}
}

// takeHeap writes the child's heap profile for the nominal time at.
func (sm *sampler) takeHeap(ctx context.Context, at time.Duration) error {
	path := heapProfilePath(sm.cfg.HeapProfile, at)
	sec := time.Since(sm.start).Seconds()
	if err := sm.srv.heapProfile(ctx, path); err != nil {
		return err
	}
	sm.heaps = append(sm.heaps, HeapProfile{Sec: sec, Path: path})
	return nil
}

// heapTops puts the top in-use allocation sites of each heap profile, and
// those of the difference between the last and the first, into res.
func heapTops(ctx context.Context, res *Result, heaps []HeapProfile) error {
	if len(heaps) == 0 {
		return nil
	}
	for i := range heaps {
		top, err := pprofTop(ctx, heaps[i].Path, "", 12)
		if err != nil {
			res.HeapNote = err.Error()
			break
		}
		heaps[i].Top = top
	}
	res.HeapProfiles = heaps
	if n := len(heaps); n > 1 && res.HeapNote == "" {
		diff, err := pprofTop(ctx, heaps[n-1].Path, heaps[0].Path, 12)
		if err != nil {
			res.HeapNote = err.Error()
		}
		res.HeapDiffTop = diff
	}
	return nil
}

// expectedDeliveries is how many change frames the clients should get for
// changes rows spread round-robin over the committees.
func expectedDeliveries(changes int64, cfg *Config) int64 {
	n := int64(cfg.Clients)
	if cfg.Scope == "admin" {
		return changes * n
	}
	c := int64(cfg.Committees)
	var total int64
	for k := int64(0); k < c; k++ {
		rows := changes / c
		if k < changes%c {
			rows++
		}
		clients := n / c
		if k < n%c {
			clients++
		}
		total += rows * clients
	}
	return total
}

func startPublishing(ctx context.Context, srv *server, rate float64, d time.Duration) error {
	q := url.Values{"rate": {fmt.Sprint(rate)}, "seconds": {fmt.Sprint(d.Seconds())}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.http+"/start?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("start the minimal server's publisher: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("start the minimal server's publisher: HTTP %d", resp.StatusCode)
	}
	return nil
}

// runIdle measures walcast's resident memory per idle connection.
func runIdle(ctx context.Context, cfg *Config, e *env, res *Result) error {
	res.IdleConns = cfg.Idle
	if err := setupDatabase(ctx, e.dbURL, cfg.Committees, true); err != nil {
		return err
	}
	srv, err := startServer(ctx, cfg, e, "walcast")
	if err != nil {
		return err
	}
	defer srv.stop()
	before, err := settledRSS(ctx, srv.pid)
	if err != nil {
		return err
	}
	pool := &clientPool{}
	secret := []byte(e.secret)
	t0 := time.Now()
	if err := pool.connect(ctx, srv.ws, cfg.Idle, func(i int) (string, error) {
		return tokenFor(secret, i, cfg.Scope, cfg.Committees)
	}, 5*time.Minute); err != nil {
		return err
	}
	res.ConnectPerSec = float64(cfg.Idle) / time.Since(t0).Seconds()
	runCtx, stopClients := context.WithCancel(ctx)
	pool.start(runCtx) // idle, but reading: pings are answered
	defer func() {
		stopClients()
		pool.closeAll()
	}()
	after, err := settledRSS(ctx, srv.pid)
	if err != nil {
		return err
	}
	res.RSSBefore, res.RSSAfter = before, after
	res.BytesPerConn = float64(after-before) / float64(cfg.Idle)
	if m, err := readMemory(srv.pid); err == nil {
		res.PeakRSS = m.HWM
	}
	return nil
}

// settledRSS waits until the process's RSS changes by less than 0.5%
// between three consecutive samples 500 ms apart (at most 20 s).
func settledRSS(ctx context.Context, pid int) (int64, error) {
	var prev int64
	stable := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := readMemory(pid)
		if err != nil {
			return 0, err
		}
		if prev > 0 && abs(m.RSS-prev)*200 < prev {
			stable++
		} else {
			stable = 0
		}
		prev = m.RSS
		if stable >= 3 || time.Now().After(deadline) {
			return m.RSS, nil
		}
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// loadAverage is the machine's 1-minute load average at the end of a run
// (other work on the machine shows in it); 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
