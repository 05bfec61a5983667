package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/dashboard"
	"github.com/walcast/walcast/schema"
)

// Dashboards and presence: the wiring of the dashboard package and of
// broadcast.Presence into the App, and their flags.

// dashSink is the bus as capture sees it when dashboards are on: it lets
// the dashboard builder append its messages through the same serialized
// path as the changes, at positions that keep the stream's ids increasing.
//
// A dashboard message takes the position right after the newest entry on
// the bus, in the same LSN: (L, top.Seq+1). Every transaction not stored
// yet has a commit LSN above L, so its changes still sort after it, and
// Redis never refuses a change because of a dashboard. That holds only
// when the entry at L belongs to a transaction stored whole: never in the
// middle of a large transaction stored in pieces, whose later pieces take
// the ordinals after it. So a dashboard is placed only when the top of the
// bus is a complete transaction: the last one this process stored ended
// with its commit, or the top's LSN is below the slot's confirmed position
// (everything before it is stored whole: after a restart, before the WAL
// re-read catches up). Otherwise it waits for the next round.
type dashSink struct {
	bus  appender
	head func(ctx context.Context) (schema.Position, error)
	// confirmed returns the slot's confirmed position (0 before capture
	// has one).
	confirmed func() uint64
	builder   *dashboard.Builder

	mu         sync.Mutex // serializes change and dashboard appends
	top        schema.Position
	lastChange schema.Position // the newest change this process stored
	complete   bool            // the last transaction stored ended with its commit
}

// Append stores change messages; routeSink.Store calls it with mu held.
func (d *dashSink) Append(ctx context.Context, msgs []schema.Message) error {
	return d.bus.Append(ctx, msgs)
}

// stored records transactions the bus has stored; mu is held.
func (d *dashSink) stored(txs []schema.Tx) {
	for i := range txs {
		tx := &txs[i]
		if n := len(tx.Changes); n > 0 {
			d.lastChange = tx.Changes[n-1].Pos
			if d.top.Less(d.lastChange) {
				d.top = d.lastChange
			}
		}
		// Only a transaction's last piece carries its end position.
		d.complete = tx.EndLSN != 0
		d.builder.Note(tx)
	}
}

// errNotPlaced: the top of the bus may be the middle of a transaction.
var errNotPlaced = errors.New("the bus's newest entry may be inside a transaction still being stored")

// emit appends dashboard messages after the newest entry on the bus.
func (d *dashSink) emit(ctx context.Context, msgs []schema.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Read the bus's head each time: after a restart or a standby
	// takeover it holds what other processes stored.
	head, err := d.head(ctx)
	if err != nil {
		return fmt.Errorf("read the bus head: %w", err)
	}
	top := d.top
	if top.Less(head) {
		top = head
	}
	if !d.placeable(top) {
		return errNotPlaced
	}
	for i := range msgs {
		top.Seq++
		msgs[i].Pos = top
	}
	if err := d.bus.Append(ctx, msgs); err != nil {
		return err
	}
	d.top = top
	return nil
}

// placeable reports whether a dashboard may follow top; mu is held.
func (d *dashSink) placeable(top schema.Position) bool {
	return top.IsZero() ||
		(d.confirmed != nil && top.LSN < d.confirmed()) ||
		(d.complete && top.LSN == d.lastChange.LSN)
}

// ready reports whether dashboards can be stored now, as far as this
// process knows (emit checks the bus's head too), so that none is
// computed in vain in the middle of a large transaction.
func (d *dashSink) ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.placeable(d.top)
}

// Store is the capture's sink: with dashboards on, it stores the changes
// and tells the dashboard builder what they touched, serialized with the
// dashboards' own appends.
func (s routeSink) Store(ctx context.Context, txs []schema.Tx) error {
	d, ok := s.bus.(*dashSink)
	if !ok {
		return s.storeChanges(ctx, txs)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := s.storeChanges(ctx, txs); err != nil {
		return err
	}
	d.stored(txs)
	return nil
}

// startDashboards wraps the bus of a capturing process so that dashboards
// are computed and appended to it; nil when dashboards are off.
func (a *App) startDashboards(bus appender, history broadcast.History, replaced func(conn, reason string)) *dashSink {
	if a.cfg.Live.DashboardInterval <= 0 {
		return nil
	}
	batch := a.cfg.Live.DashboardBatch
	if a.mode == cmdRun && a.cfg.ClientWindow > 0 {
		// One round's dashboards reach this process's hub at once: keep
		// them a small part of the window that idle clients may lag, so a
		// burst never closes them as too slow. (A capture process cannot
		// see its serve replicas' windows: --dashboard-batch says it.)
		batch = min(batch, max(1, a.cfg.ClientWindow/4))
	}
	b := dashboard.New(dashboard.Config{
		DatabaseURL: a.cfg.DatabaseURL,
		Tables:      a.cfg.Tables,
		Interval:    a.cfg.Live.DashboardInterval,
		Batch:       batch,
		Logger:      a.log,

		QueryTimeout: a.cfg.Transport.QueryTimeout,
		Transport:    a.cfg.Transport.TCP,
		OnReplaced:   replaced,
	})
	a.mu.Lock()
	a.live.dashboards = b
	a.mu.Unlock()
	return &dashSink{bus: bus, head: history.Head, builder: b}
}

// runDashboards returns the builder's loop, gated on capture streaming
// (a standby computes nothing), and exports its counters.
func (d *dashSink) run(status func() uint64, streaming func() bool, met *metrics) func(context.Context) error {
	d.confirmed = status
	stats := d.builder.Stats
	for _, kind := range []string{schema.DashboardPersonal, schema.DashboardSupervisor, schema.DashboardAdmin} {
		met.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "walcast_dashboard_recomputes_total", Help: "Dashboards recomputed, by type.",
			ConstLabels: prometheus.Labels{"dashboard_type": kind},
		}, func() float64 {
			s := stats()
			switch kind {
			case schema.DashboardPersonal:
				return float64(s.Personal)
			case schema.DashboardSupervisor:
				return float64(s.Supervisor)
			}
			return float64(s.Admin)
		}))
	}
	for _, kind := range []string{schema.DashboardPersonal, schema.DashboardSupervisor, schema.DashboardAdmin} {
		met.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "walcast_dashboard_failures_total", Help: "Dashboards whose queries failed, by type: skipped (the others were sent) until a change touches them again; the log says why and how to fix it.",
			ConstLabels: prometheus.Labels{"dashboard_type": kind},
		}, func() float64 { return float64(stats().Failed[kind]) }))
	}
	met.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "walcast_dashboard_rounds_total", Help: "Dashboard recompute rounds (one set of aggregate queries each).",
	}, func() float64 { return float64(stats().Rounds) }))
	ready := func() bool { return streaming() && d.ready() }
	return func(ctx context.Context) error { return d.builder.Run(ctx, d.emit, ready) }
}

// Dashboards returns the dashboard builder's counters (zero when this
// process computes none).
func (a *App) Dashboards() dashboard.Stats {
	a.mu.Lock()
	b := a.live.dashboards
	a.mu.Unlock()
	if b == nil {
		return dashboard.Stats{}
	}
	return b.Stats()
}

// liveState is the App's dashboards and presence.
type liveState struct {
	dashboards *dashboard.Builder
	presence   *broadcast.Presence
}

// liveConfig holds the settings of dashboards and presence.
type liveConfig struct {
	DashboardInterval time.Duration
	DashboardBatch    int
	PresenceTTL       time.Duration
}

func init() {
	options = append(options,
		option{
			flag: "dashboard-interval", env: []string{"WALCAST_DASHBOARD_INTERVAL"}, def: "500ms",
			help: "shortest time between two recomputations of a dashboard (dashboard_update); 0 turns dashboards off",
			in:   []string{cmdRun, cmdCapture},
			set: func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return errors.New("want a duration such as 500ms, or 0 for off")
				}
				c.Live.DashboardInterval = d
				return nil
			},
		},
		option{
			flag: "dashboard-batch", env: []string{"WALCAST_DASHBOARD_BATCH"}, def: strconv.Itoa(dashboard.DefaultBatch),
			help: "most dashboards sent per --dashboard-interval; a burst (start-up, TRUNCATE: one per user and committee) is spread over later rounds, admin and committee dashboards first",
			in:   []string{cmdRun, cmdCapture},
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return errors.New("want a positive integer")
				}
				c.Live.DashboardBatch = n
				return nil
			},
		},
		option{
			flag: "presence-ttl", env: []string{"WALCAST_PRESENCE_TTL"}, def: "15s",
			help: "how long a serve replica's presence entries outlive it in Redis: a crashed replica's users disappear within about this time",
			in:   []string{cmdRun, cmdServe},
			set: func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil || d < time.Second {
					return errors.New("want a duration of at least 1s, such as 15s")
				}
				c.Live.PresenceTTL = d
				return nil
			},
		},
	)
}

// startPresence returns the presence of a serving process: shared with the
// other replicas through Redis when there is one (its loop is added to
// work), in-process otherwise.
func (a *App) startPresence(serving bool, redis *broadcast.RedisBus, work *[]func(context.Context) error) *broadcast.Presence {
	if !serving {
		return nil
	}
	p := broadcast.NewPresence()
	if redis != nil {
		*work = append(*work, redis.PresenceLink(p, a.cfg.Live.PresenceTTL).Run)
	}
	a.mu.Lock()
	a.live.presence = p
	a.mu.Unlock()
	return p
}

// Presence returns the process's presence (nil unless it serves).
func (a *App) Presence() *broadcast.Presence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live.presence
}
