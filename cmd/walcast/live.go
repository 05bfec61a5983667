package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/dashboard"
	"github.com/walcast/walcast/pipeline"
	"github.com/walcast/walcast/schema"
)

// Dashboards and presence: the wiring of the dashboard builder, of its
// placement on the bus (pipeline.Dashboards) and of broadcast.Presence
// into the App.

// liveConfig holds the settings of dashboards and presence.
type liveConfig struct {
	DashboardInterval time.Duration
	DashboardBatch    int
	PresenceTTL       time.Duration
}

// startDashboards returns the dashboard builder of a capturing process and
// the placement of its messages on bus; both nil when dashboards are off.
func (a *App) startDashboards(bus pipeline.DashboardBus, replaced func(conn, reason string)) (*dashboard.Builder, *pipeline.Dashboards) {
	if a.cfg.Live.DashboardInterval <= 0 {
		return nil, nil
	}
	batch := a.cfg.Live.DashboardBatch
	if a.mode == cmdRun && a.cfg.ClientWindow > 0 {
		// One round's dashboards reach this process's hub at once: keep
		// them within its dashboard ring, so a round never laps a client
		// that keeps up. (A capture process cannot see its serve
		// replicas' rings: --dashboard-batch says it.)
		batch = min(batch, broadcast.DashboardWindow(a.cfg.ClientWindow))
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
	a.dashboards = b
	a.mu.Unlock()
	return b, pipeline.NewDashboards(bus, b)
}

// watchDashboards exports the dashboard builder's counters.
func (m *metrics) watchDashboards(stats func() dashboard.Stats) {
	kinds := []string{schema.DashboardPersonal, schema.DashboardSupervisor, schema.DashboardAdmin}
	for _, kind := range kinds {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
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
	for _, kind := range kinds {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "walcast_dashboard_failures_total", Help: "Dashboards whose queries failed, by type: skipped (the others were sent) until a change touches them again; the log says why and how to fix it.",
			ConstLabels: prometheus.Labels{"dashboard_type": kind},
		}, func() float64 { return float64(stats().Failed[kind]) }))
	}
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "walcast_dashboard_rounds_total", Help: "Dashboard recompute rounds (one set of aggregate queries each).",
	}, func() float64 { return float64(stats().Rounds) }))
}

// Dashboards returns the dashboard builder's counters (zero when this
// process computes none).
func (a *App) Dashboards() dashboard.Stats {
	if _, b := a.parts(); b != nil {
		return b.Stats()
	}
	return dashboard.Stats{}
}

// startPresence returns the presence of a serving process: shared with the
// other replicas through Redis when there is one (link is then its loop),
// in-process otherwise (link is nil).
func (a *App) startPresence(redis *broadcast.RedisBus) (p *broadcast.Presence, link func(context.Context) error) {
	p = broadcast.NewPresence()
	if redis != nil {
		link = redis.PresenceLink(p, a.cfg.Live.PresenceTTL).Run
	}
	return p, link
}
