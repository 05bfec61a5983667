package main

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/schema"
)

// metrics are walcast's Prometheus metrics. The domain packages keep plain
// counters; this file reads them at scrape time, so nothing on the hot
// path knows about Prometheus.
type metrics struct {
	reg        *prometheus.Registry
	changes    *prometheus.CounterVec
	appendTime prometheus.Histogram
	commitLag  prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walcast_changes_total", Help: "Row changes stored on the bus, by table and action.",
	}, []string{"table", "action"})
	m.appendTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "walcast_bus_append_seconds", Help: "Time to store one batch of changes on the bus.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.commitLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "walcast_commit_to_bus_seconds", Help: "Time from a transaction's commit to its changes being stored on the bus.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
	})
	m.reg.MustRegister(m.changes, m.appendTime, m.commitLag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// watchCapture exports the replication position and lag.
func (m *metrics) watchCapture(status func() cdc.Status) {
	gauge := func(name, help string, f func(cdc.Status) float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(status()) }))
	}
	gauge("walcast_replication_streaming", "1 while a replication session streams.", func(s cdc.Status) float64 { return b2f(s.Streaming) })
	gauge("walcast_replication_standby", "1 while waiting for another process to release the slot.", func(s cdc.Status) float64 { return b2f(s.Waiting != "") })
	gauge("walcast_replication_confirmed_lsn", "Position confirmed to PostgreSQL: everything before it is stored.", func(s cdc.Status) float64 { return float64(s.Confirmed) })
	gauge("walcast_replication_lag_bytes", "Server WAL end minus the confirmed position.", func(s cdc.Status) float64 {
		if s.ServerEnd < s.Confirmed {
			return 0
		}
		return float64(s.ServerEnd - s.Confirmed)
	})
	gauge("walcast_replication_sessions_total", "Replication sessions started; more than one means reconnects.", func(s cdc.Status) float64 { return float64(s.Sessions) })
	gauge("walcast_heartbeat_lag_seconds", "Round trip of the last heartbeat through the WAL and the replication stream, or the age of the oldest one not yet back when larger.", func(s cdc.Status) float64 { return s.HeartbeatLag.Seconds() })
	gauge("walcast_replication_stalled", "1 while a streaming session counts as stalled (no heartbeat back within --stall-threshold), and from a session closed as silent until the next one streams.", func(s cdc.Status) float64 { return b2f(s.Stalled != "") })
	m.reg.MustRegister(slotCollector{status})
}

// slotCollector reports the slot's WAL as capture last read it; nothing
// before the first read.
type slotCollector struct{ status func() cdc.Status }

var (
	retainedDesc  = prometheus.NewDesc("walcast_slot_retained_wal_bytes", "WAL the replication slot holds back on the database server: current WAL position minus restart_lsn.", nil, nil)
	safeDesc      = prometheus.NewDesc("walcast_slot_safe_wal_size_bytes", "WAL that may still be written before PostgreSQL invalidates the slot (safe_wal_size), negative past the limit; absent when max_slot_wal_keep_size is unlimited.", nil, nil)
	walStatusDesc = prometheus.NewDesc("walcast_slot_wal_status", "1 for the slot's wal_status (reserved, extended, unreserved, lost), 0 for the others.", []string{"status"}, nil)
	walStatuses   = []string{"reserved", "extended", "unreserved", "lost"}
)

func (c slotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- retainedDesc
	ch <- safeDesc
	ch <- walStatusDesc
}

func (c slotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	if s.RetainedWAL >= 0 {
		ch <- prometheus.MustNewConstMetric(retainedDesc, prometheus.GaugeValue, float64(s.RetainedWAL))
	}
	if s.SafeWALSize != cdc.NoWALLimit {
		ch <- prometheus.MustNewConstMetric(safeDesc, prometheus.GaugeValue, float64(s.SafeWALSize))
	}
	if s.WALStatus != "" {
		for _, st := range walStatuses {
			ch <- prometheus.MustNewConstMetric(walStatusDesc, prometheus.GaugeValue, b2f(st == s.WALStatus), st)
		}
	}
}

// watchServer exports the WebSocket side.
func (m *metrics) watchServer(hub *broadcast.Hub, srv *broadcast.Server) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_clients", Help: "Connected WebSocket clients."},
			func() float64 { return float64(hub.Stats().Clients) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_messages_published_total", Help: "Messages fanned out by this process."},
			func() float64 { return float64(hub.Stats().Published) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_deliveries_total", Help: "Messages written to clients."},
			func() float64 { return float64(hub.Stats().Delivered) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_slow_consumer_closes_total", Help: "Clients closed with 4008 for falling behind."},
			func() float64 { return float64(hub.Stats().SlowClosed) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_resumes_total", Help: "Resume requests served from history."},
			func() float64 { return float64(srv.Resumes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_syncs_total", Help: "Syncs served (state sent, then state_end)."},
			func() float64 { return float64(srv.Syncs()) }),
		refusedCollector{srv},
	)
}

// refusedCollector reports refused upgrades by reason.
type refusedCollector struct{ srv *broadcast.Server }

var refusedDesc = prometheus.NewDesc("walcast_connections_refused_total", "WebSocket upgrades refused, by reason (auth failures by their reason, origin, rate_limited, user_limit, server_full).", []string{"reason"}, nil)

func (c refusedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- refusedDesc }
func (c refusedCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.srv.Refused() {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// watchListener exports a listener's TCP connections.
func (m *metrics) watchListener(name string, l *broadcast.ConnLimiter) {
	labels := prometheus.Labels{"listener": name}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_http_connections_open", Help: "TCP connections open on the listener, WebSockets included.", ConstLabels: labels},
			func() float64 { return float64(l.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_http_connections_max", Help: "The listener's cap on open TCP connections.", ConstLabels: labels},
			func() float64 { return float64(l.Max()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_http_connections_accepted_total", Help: "TCP connections accepted by the listener.", ConstLabels: labels},
			func() float64 { return float64(l.Accepted()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "walcast_http_connections_refused_total", Help: "TCP connections closed at once because the listener's cap was reached.", ConstLabels: labels},
			func() float64 { return float64(l.Refused()) }),
	)
}

// watchRedis exports whether the bus answers.
func (m *metrics) watchRedis(r *broadcast.RedisBus) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_bus_up", Help: "1 when the last Redis command succeeded and the follower (where it runs) reads."},
		func() float64 { return b2f(r.Healthy()) }))
	if r.MinReplicas() > 0 {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_redis_replicas_acked", Help: "Redis replicas that acknowledged the last append (WAIT); below --redis-min-replicas nothing is confirmed."},
			func() float64 { _, acked, _ := r.ReplicaStatus(); return float64(acked) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "walcast_redis_replica_lag_bytes", Help: "Bytes of the replication stream the --redis-min-replicas-th replica lacked when the last append's wait fell short (INFO replication offsets); 0 after a full acknowledgement, -1 before the first append or when unknown."},
			func() float64 { _, _, lag := r.ReplicaStatus(); return float64(lag) }))
	}
}

// watchState exports the live state's rows and bytes per table, read from
// the bus at each scrape (for Redis: one HGETALL and an HLEN per table).
func (m *metrics) watchState(s broadcast.StateStore) {
	m.reg.MustRegister(&stateCollector{store: s,
		rows:  prometheus.NewDesc("walcast_state_rows", "Rows of live state held, per table (0 for a table whose state is off).", []string{"table"}, nil),
		bytes: prometheus.NewDesc("walcast_state_bytes", "Bytes of live state held (keys and row records), per table.", []string{"table"}, nil),
		off:   prometheus.NewDesc("walcast_state_off", "1 when a table's live state is off: it exceeded --state-max-rows (raise it, then walcast state rebuild).", []string{"table"}, nil)})
}

// stateCollector reads StateInfo at each scrape.
type stateCollector struct {
	store            broadcast.StateStore
	rows, bytes, off *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rows
	ch <- c.bytes
	ch <- c.off
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.store.StateInfo(ctx)
	if err != nil {
		return // the bus's own metrics say it is down
	}
	for t, ts := range st.Tables {
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(ts.Rows), t)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(ts.Bytes), t)
		ch <- prometheus.MustNewConstMetric(c.off, prometheus.GaugeValue, b2f(ts.Off), t)
	}
}

// storeObserver counts what the pipeline stored: changes by table and
// action, append time and commit lag, and the changes sent to admins only.
type storeObserver struct {
	met        *metrics
	unroutable *unroutable
}

// Unroutable counts and logs a change sent to admins only.
func (o storeObserver) Unroutable(table string, m *schema.Message) { o.unroutable.note(table, m) }

// Stored counts the changes of txs, stored in took.
func (o storeObserver) Stored(txs []schema.Tx, took time.Duration) {
	m := o.met
	m.appendTime.Observe(took.Seconds())
	if commit := txs[len(txs)-1].CommitTime; !commit.IsZero() {
		m.commitLag.Observe(time.Since(commit).Seconds())
	}
	for i := range txs {
		for j := range txs[i].Changes {
			ch := &txs[i].Changes[j]
			m.changes.WithLabelValues(ch.Schema+"."+ch.Table, ch.Op.String()).Inc()
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
