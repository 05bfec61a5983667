package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/schema"
)

// Serve-tier mode measures what one Redis can feed. Every `walcast serve`
// replica follows the whole stream, so each one adds to Redis's work
// whatever its number of clients. For each number of replicas asked, it
// starts that many `walcast serve` children on the bench's Redis, gives
// each a few clients (so that delivery is real), appends changes at a
// fixed rate for a fixed time, and reads Redis's CPU from /proc, its
// network out from INFO stats, each replica's CPU, and how far each
// replica was behind when the appends stopped.
//
// The changes are appended straight into the stream through the
// broadcast package's Append, the path capture stores with: the same
// script, the same entry format, batches of whatever transactions are due
// (up to capture's 256), as capture batches what queued up during the
// previous append. PostgreSQL, its WAL decoding and capture are left out
// on purpose: on a two-core machine they would take the CPU the serve
// replicas and Redis are measured with, and they cost the same whatever
// the number of replicas, so they would only blur the per-replica figure.

// ServeTierRow is one number of serve replicas in serve-tier mode.
type ServeTierRow struct {
	Replicas int    `json:"replicas"`
	LoadAvg  string `json:"loadavg"` // /proc/loadavg before the step
	// MachineBusyPct: all cores, percent busy during the appends (from
	// /proc/stat): near 100, the machine, not Redis, is the limit.
	MachineBusyPct float64 `json:"machine_busy_pct"`
	WindowSec      float64 `json:"window_s"`
	Appended       int64   `json:"appended"`
	AppendRate     float64 `json:"append_rate"`
	AppendCalls    int64   `json:"append_calls"` // round trips of the append script

	RedisCPUPct    float64        `json:"redis_cpu_pct"` // % of one core, /proc/<pid>/stat
	RedisOutPerSec float64        `json:"redis_out_bytes_per_s"`
	RedisInPerSec  float64        `json:"redis_in_bytes_per_s"`
	Commands       []CommandShare `json:"commands,omitempty"` // INFO commandstats, busiest first
	// Against the row with one replica of the same run (0 without one).
	RedisCPURatio float64 `json:"redis_cpu_ratio,omitempty"`
	RedisOutRatio float64 `json:"redis_out_ratio,omitempty"`
	// With --serve-from-replicas: each Redis replica's CPU (% of one
	// core) and network out.
	RedisReplicaCPUPct    []float64 `json:"redis_replica_cpu_pct,omitempty"`
	RedisReplicaOutPerSec []float64 `json:"redis_replica_out_bytes_per_s,omitempty"`

	ServeCPUPct []float64 `json:"serve_cpu_pct,omitempty"` // per replica, % of one core
	// LagAtEnd: entries each replica had not yet published when the
	// appends stopped. CatchUpSec: from then until the slowest had
	// published them all; -1 when it had not within 30 s.
	LagAtEnd           []int64 `json:"lag_at_end,omitempty"`
	CatchUpSec         float64 `json:"catch_up_s"`
	Deliveries         int64   `json:"deliveries"`
	ExpectedDeliveries int64   `json:"expected_deliveries"`
	FailedClients      int64   `json:"failed_clients,omitempty"`
}

// CommandShare is the time Redis spent in one command during the window,
// as a percentage of one core, from INFO commandstats. Commands a script
// runs are counted both under the script (evalsha) and under their own
// name.
type CommandShare struct {
	Name    string  `json:"name"`
	Calls   int64   `json:"calls"`
	CorePct float64 `json:"core_pct"`
}

// runServeTier measures each of cfg.ServeReplicas in turn on one Redis,
// with the stream emptied between them.
func runServeTier(ctx context.Context, cfg *Config, e *env, res *Result) error {
	res.Clients, res.Scope, res.Committees, res.Rate, res.TxSize = cfg.Clients, cfg.Scope, cfg.Committees, cfg.Rate, cfg.TxSize
	res.ServeFromReplicas = cfg.ServeFromReplicas
	urls := []string{e.redisURL}
	if cfg.ServeFromReplicas {
		for _, r := range e.replicas {
			urls = append(urls, r.URL())
		}
	}
	var nodes []*redisNode
	defer func() {
		for _, n := range nodes {
			n.rdb.Close()
		}
	}()
	for _, u := range urls {
		n, err := newRedisNode(ctx, u)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	for _, n := range cfg.ServeReplicas {
		if err := nodes[0].rdb.Del(ctx, broadcast.DefaultStreamKey).Err(); err != nil {
			return fmt.Errorf("empty the stream before %d replicas: %w", n, err)
		}
		row, err := measureTierStep(ctx, cfg, e, nodes, n)
		if err != nil {
			return fmt.Errorf("%d serve replicas: %w", n, err)
		}
		res.ServeTier = append(res.ServeTier, row)
	}
	setTierRatios(res.ServeTier)
	return nil
}

// measureTierStep measures n replicas with an appender of its own, as a
// capture starting on the emptied stream: a bus remembers the newest
// entry it stored and would take the emptied stream for entries a
// failover lost.
func measureTierStep(ctx context.Context, cfg *Config, e *env, nodes []*redisNode, n int) (ServeTierRow, error) {
	// walcast's default --history: the appends trim the stream as capture's do.
	bus, err := broadcast.NewRedisBus(broadcast.RedisConfig{URL: e.redisURL, History: 100_000})
	if err != nil {
		return ServeTierRow{}, err
	}
	defer bus.Close()
	return measureTier(ctx, cfg, e, nodes, bus, n)
}

// redisNode is a Redis whose CPU and network serve-tier measures: the
// primary, and with --serve-from-replicas its replicas.
type redisNode struct {
	url string
	rdb *redis.Client
	pid int
}

func newRedisNode(ctx context.Context, url string) (*redisNode, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	rdb := redis.NewClient(opt)
	pid, err := redisPID(ctx, rdb)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	return &redisNode{url: url, rdb: rdb, pid: pid}, nil
}

// setTierRatios sets each row's figures against the row with one replica.
func setTierRatios(rows []ServeTierRow) {
	var base *ServeTierRow
	for i := range rows {
		if rows[i].Replicas == 1 {
			base = &rows[i]
		}
	}
	if base == nil || base.RedisCPUPct == 0 || base.RedisOutPerSec == 0 {
		return
	}
	for i := range rows {
		rows[i].RedisCPURatio = rows[i].RedisCPUPct / base.RedisCPUPct
		rows[i].RedisOutRatio = rows[i].RedisOutPerSec / base.RedisOutPerSec
	}
}

// redisPID asks Redis for its process id and checks that its CPU time can
// be read here: the mode measures a Redis on this machine.
func redisPID(ctx context.Context, rdb *redis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO server: %w", err)
	}
	pid, err := strconv.Atoi(infoField(info, "process_id"))
	if err != nil {
		return 0, errors.New("redis INFO server has no process_id")
	}
	if _, err := cpuTime(pid); err != nil {
		return 0, fmt.Errorf("serve-tier mode reads Redis's CPU time from /proc, so Redis must run on this machine: %w", err)
	}
	return pid, nil
}

// infoField returns a field of an INFO answer ("" when absent).
func infoField(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == name {
			return v
		}
	}
	return ""
}

// tier is the serve replicas of one step and their clients.
type tier struct {
	servers []*server
	pools   []*clientPool
	stop    context.CancelFunc
}

// startTier starts n serve replicas, following the Redis servers of urls
// round-robin, and connects cfg.Clients clients to each.
func startTier(ctx context.Context, cfg *Config, e *env, urls []string, n int) (_ *tier, err error) {
	t := &tier{stop: func() {}}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	for i := range n {
		srv, err := startServe(ctx, cfg, e.dir, urls[i%len(urls)], e.secret)
		if err != nil {
			return t, err
		}
		t.servers = append(t.servers, srv)
	}
	secret := []byte(e.secret)
	runCtx, stop := context.WithCancel(ctx)
	t.stop = stop
	for _, srv := range t.servers {
		pool := &clientPool{}
		if err := pool.connect(ctx, srv.ws, cfg.Clients, func(i int) (string, error) {
			return tokenFor(secret, i, cfg.Scope, cfg.Committees)
		}, time.Minute); err != nil {
			return t, err
		}
		pool.start(runCtx)
		t.pools = append(t.pools, pool)
	}
	return t, nil
}

func (t *tier) close() {
	t.stop()
	for _, p := range t.pools {
		p.closeAll()
	}
	for _, s := range t.servers {
		_ = s.stop()
	}
}

// published returns how many entries each replica has published.
func (t *tier) published(ctx context.Context) ([]int64, error) {
	out := make([]int64, len(t.servers))
	errs := make([]error, len(t.servers))
	var wg sync.WaitGroup
	for i, s := range t.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.metrics(ctx)
			out[i], errs[i] = int64(m["walcast_messages_published_total"]), err
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// deliveries sums the clients of every replica.
func (t *tier) deliveries() (n, failed int64) {
	for _, p := range t.pools {
		d, _ := p.deliveries()
		n += d
		failed += p.stopped.Load()
	}
	return n, failed
}

// redisCounters is what serve-tier reads from Redis before and after the
// appends.
type redisCounters struct {
	cpu      time.Duration
	out, in  int64
	commands map[string][2]int64 // calls, usec
}

func readRedisCounters(ctx context.Context, rdb *redis.Client, pid int) (redisCounters, error) {
	var c redisCounters
	info, err := rdb.Info(ctx, "stats", "commandstats").Result()
	if err != nil {
		return c, fmt.Errorf("redis INFO stats: %w", err)
	}
	c.out, _ = strconv.ParseInt(infoField(info, "total_net_output_bytes"), 10, 64)
	c.in, _ = strconv.ParseInt(infoField(info, "total_net_input_bytes"), 10, 64)
	c.commands = map[string][2]int64{}
	for _, l := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		var calls, usec int64
		for _, f := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(f, "=")
			switch name {
			case "calls":
				calls, _ = strconv.ParseInt(val, 10, 64)
			case "usec":
				usec, _ = strconv.ParseInt(val, 10, 64)
			}
		}
		c.commands[strings.TrimPrefix(k, "cmdstat_")] = [2]int64{calls, usec}
	}
	c.cpu, err = cpuTime(pid)
	return c, err
}

// commandShares returns the commands Redis spent time in between a and b,
// busiest first, leaving out those under 0.1% of a core.
func commandShares(a, b redisCounters, window time.Duration) []CommandShare {
	var out []CommandShare
	for name, v := range b.commands {
		calls, usec := v[0]-a.commands[name][0], v[1]-a.commands[name][1]
		pct := 100 * float64(usec) / float64(window.Microseconds())
		if pct >= 0.1 {
			out = append(out, CommandShare{Name: name, Calls: calls, CorePct: pct})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CorePct > out[j].CorePct })
	return out
}

// measureTier runs one step: n replicas, the appends, the figures.
// nodes[0] is the primary; the replicas follow it, or with
// --serve-from-replicas the other nodes.
func measureTier(ctx context.Context, cfg *Config, e *env, nodes []*redisNode, bus *broadcast.RedisBus, n int) (ServeTierRow, error) {
	row := ServeTierRow{Replicas: n, LoadAvg: loadAvg()}
	follow := nodes[:1]
	if len(nodes) > 1 {
		follow = nodes[1:]
	}
	var urls []string
	for _, f := range follow {
		urls = append(urls, f.url)
	}
	t, err := startTier(ctx, cfg, e, urls, n)
	if err != nil {
		return row, err
	}
	defer t.close()

	meters := make([]cpuMeter, n)
	for i, s := range t.servers {
		meters[i] = startCPU(s.pid)
	}
	busy := startMachineBusy()
	before, err := readAllCounters(ctx, nodes)
	if err != nil {
		return row, err
	}
	start := time.Now()
	a := &appender{bus: bus, rate: cfg.Rate, txSize: cfg.TxSize, rowSize: cfg.RowSize, committees: cfg.Committees}
	if err := a.run(ctx, cfg.Duration); err != nil {
		return row, err
	}
	window := time.Since(start)
	after, err := readAllCounters(ctx, nodes)
	if err != nil {
		return row, err
	}
	row.MachineBusyPct = busy.stop()
	for _, m := range meters {
		_, pct := m.stop()
		row.ServeCPUPct = append(row.ServeCPUPct, pct)
	}
	sec := window.Seconds()
	row.WindowSec, row.Appended, row.AppendCalls = sec, a.appended, a.calls
	row.AppendRate = float64(a.appended) / sec
	row.RedisCPUPct = 100 * (after[0].cpu - before[0].cpu).Seconds() / sec
	row.RedisOutPerSec = float64(after[0].out-before[0].out) / sec
	row.RedisInPerSec = float64(after[0].in-before[0].in) / sec
	row.Commands = commandShares(before[0], after[0], window)
	for i := 1; i < len(nodes); i++ {
		row.RedisReplicaCPUPct = append(row.RedisReplicaCPUPct, 100*(after[i].cpu-before[i].cpu).Seconds()/sec)
		row.RedisReplicaOutPerSec = append(row.RedisReplicaOutPerSec, float64(after[i].out-before[i].out)/sec)
	}
	return row, t.finish(ctx, cfg, &row)
}

// readAllCounters reads every node's counters.
func readAllCounters(ctx context.Context, nodes []*redisNode) ([]redisCounters, error) {
	out := make([]redisCounters, len(nodes))
	for i, n := range nodes {
		c, err := readRedisCounters(ctx, n.rdb, n.pid)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// finish reads how far behind each replica was at the end of the appends,
// waits for them to catch up and for the clients' last deliveries.
func (t *tier) finish(ctx context.Context, cfg *Config, row *ServeTierRow) error {
	ended := time.Now()
	row.CatchUpSec = -1
	if len(t.servers) == 0 {
		row.CatchUpSec = 0
		return nil
	}
	pub, err := t.published(ctx)
	if err != nil {
		return err
	}
	for _, p := range pub {
		row.LagAtEnd = append(row.LagAtEnd, max(0, row.Appended-p))
	}
	for time.Since(ended) < 30*time.Second && ctx.Err() == nil {
		if pub, err = t.published(ctx); err != nil {
			return err
		}
		if minOf(pub) >= row.Appended {
			row.CatchUpSec = time.Since(ended).Seconds()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	per := expectedDeliveries(row.Appended, cfg)
	row.ExpectedDeliveries = per * int64(len(t.servers))
	// The clients' tail: until every delivery arrived, or none for a second.
	prev, still := int64(-1), time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		got, _ := t.deliveries()
		if got >= row.ExpectedDeliveries {
			break
		}
		if got != prev {
			prev, still = got, time.Now()
		} else if time.Since(still) > time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	row.Deliveries, row.FailedClients = t.deliveries()
	return nil
}

// minOf is the smallest of v (not empty).
func minOf(v []int64) int64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

// appender appends changes at a fixed rate through the broadcast
// package's Append, in transactions of txSize changes.
type appender struct {
	bus                         *broadcast.RedisBus
	rate                        float64
	txSize, rowSize, committees int

	appended, calls int64
	msgs            []schema.Message
}

// firstLSN is the id of the first change of every step: an LSN as long as
// a real one of a few GB into the WAL.
const firstLSN = 3_000_000_000

// captureMaxBatch is the most transactions capture appends in one call
// (cdc's publisher batches up to this many).
const captureMaxBatch = 256

// run appends for d: each call carries the transactions due by now, up
// to captureMaxBatch.
func (a *appender) run(ctx context.Context, d time.Duration) error {
	perTx := time.Duration(float64(time.Second) * float64(a.txSize) / a.rate)
	start := time.Now()
	var sent int64
	for {
		el := time.Since(start)
		if el >= d {
			return nil
		}
		due := int64(el/perTx) + 1
		if sent >= due {
			wait := time.Until(start.Add(time.Duration(due) * perTx))
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		n := min(due-sent, captureMaxBatch)
		a.fill(int(n) * a.txSize)
		if err := a.bus.Append(ctx, a.msgs); err != nil {
			return fmt.Errorf("append %d changes: %w", len(a.msgs), err)
		}
		sent += n
		a.calls++
		a.appended += int64(len(a.msgs))
	}
}

// fill makes the next n changes: guarantee_update frames as walcast sends
// them, each with its send time, spread round-robin over the committees
// (the first change of the step goes to committee 1, as expectedDeliveries
// assumes).
func (a *appender) fill(n int) {
	a.msgs = a.msgs[:0]
	now := time.Now()
	for i := range n {
		k := a.appended + int64(i)
		lsn := firstLSN + k
		a.msgs = append(a.msgs, schema.Message{
			Pos: schema.Position{LSN: uint64(lsn)}, Type: schema.TypeGuarantee,
			Committee: k%int64(a.committees) + 1, HasCommittee: true,
			JSON: sampleFrame(nil, lsn, now, a.rowSize),
		})
	}
}
