package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/schema"
)

// App is one walcast process: `run` wires capture, the bus and the
// WebSocket server together. Tests start it in process on 127.0.0.1:0.
type App struct {
	cfg  *Config
	mode string // cmdRun, cmdCapture or cmdServe
	log  *slog.Logger

	listening    chan struct{}
	addr         string
	internalAddr string

	mu      sync.Mutex
	capture *cdc.Capture
	live    liveState // dashboards and presence: see live.go

	// statusInterval overrides cdc's standby status interval, for tests.
	statusInterval time.Duration
	// httpTimeouts overrides defaultTimeouts, for tests.
	httpTimeouts *httpTimeouts
}

// NewApp returns an App running mode (run, capture or serve) with cfg;
// call Run.
func NewApp(mode string, cfg *Config, log *slog.Logger) *App {
	return &App{cfg: cfg, mode: mode, log: log, listening: make(chan struct{})}
}

// Addr waits until the HTTP server listens and returns its address.
func (a *App) Addr(ctx context.Context) (string, error) {
	select {
	case <-a.listening:
		return a.addr, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Status returns the capture's progress (zero before it starts).
func (a *App) Status() cdc.Status {
	a.mu.Lock()
	c := a.capture
	a.mu.Unlock()
	if c == nil {
		return cdc.Status{}
	}
	return c.Status()
}

// routeSink turns committed transactions into messages and appends them to
// the bus: the seam between capture and delivery.
type routeSink struct {
	router     *schema.Router
	bus        appender
	metrics    *metrics
	unroutable *unroutable // counts and logs what went to admins only
}

// storeChanges routes the changes of txs and appends them to the bus.
func (s routeSink) storeChanges(ctx context.Context, txs []schema.Tx) error {
	n := 0
	for i := range txs {
		n += len(txs[i].Changes)
	}
	if n == 0 {
		return nil
	}
	msgs := make([]schema.Message, 0, n)
	type unplacedMsg struct {
		table string
		i     int // in msgs
	}
	var unplaced []unplacedMsg // messages sent to admins only for want of a scope
	for i := range txs {
		for j := range txs[i].Changes {
			if m, ok := s.router.Route(&txs[i], &txs[i].Changes[j]); ok {
				if m.Unroutable != "" {
					ch := &txs[i].Changes[j]
					unplaced = append(unplaced, unplacedMsg{ch.Schema + "." + ch.Table, len(msgs)})
				}
				msgs = append(msgs, m)
			}
		}
	}
	start := time.Now()
	if err := s.bus.Append(ctx, msgs); err != nil {
		return err
	}
	// Counted once stored: a failed append is retried with the same input.
	for _, u := range unplaced {
		s.unroutable.note(u.table, &msgs[u.i])
	}
	if s.metrics != nil {
		s.metrics.stored(time.Since(start), txs[len(txs)-1].CommitTime)
		for i := range txs {
			for j := range txs[i].Changes {
				ch := &txs[i].Changes[j]
				s.metrics.changes.WithLabelValues(ch.Schema+"."+ch.Table, ch.Op.String()).Inc()
			}
		}
	}
	return nil
}

// Run runs the App's command until ctx is cancelled, then shuts down:
// capture stores and confirms what it read, clients are closed with 1001 so
// they reconnect elsewhere.
//
//   - run: capture and serve in one process, with the in-process bus, or
//     the Redis stream when --redis-url is set;
//   - capture: capture into the Redis stream; /healthz and /readyz only;
//   - serve: deliver the Redis stream over WebSocket; no database.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
	capturing := a.mode == cmdRun || a.mode == cmdCapture
	serving := a.mode == cmdRun || a.mode == cmdServe
	if capturing && cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	if a.mode != cmdRun && cfg.RedisURL == "" {
		return &usageError{"--redis-url (or WALCAST_REDIS_URL, REDIS_URL) is required: capture and serve meet in a Redis stream"}
	}
	var verifier *broadcast.Verifier
	if serving {
		var err error
		if verifier, err = newVerifier(cfg); err != nil {
			return err
		}
	}

	a.log.Info("starting", "command", a.mode, "version", version)
	hub := broadcast.NewHub(cfg.ClientWindow)
	met := newMetrics()
	replaced := met.watchReplaced()
	var (
		bus     appender
		history broadcast.History
		redis   *broadcast.RedisBus
		lineage lineageBus
		work    []func(context.Context) error
	)
	if cfg.RedisURL != "" {
		var err error
		redis, err = broadcast.NewRedisBus(broadcast.RedisConfig{URL: cfg.RedisURL, History: cfg.History, Logger: a.log,
			Timeout: cfg.Transport.RedisTimeout, Transport: cfg.Transport.TCP, OnReplaced: replaced})
		if err != nil {
			return &usageError{"--redis-url: " + err.Error()}
		}
		defer redis.Close()
		met.watchRedis(redis)
		if err := a.checkRedis(ctx, redis); err != nil {
			return err
		}
		bus, history, lineage = redis, redis, redis
		if serving {
			// Before clients connect: resumes are then served from memory.
			if err := redis.Preload(ctx, hub); err != nil {
				a.log.Warn("cannot preload the stream's newest entries; resumes read Redis meanwhile (bounded)", "err", err)
			}
			work = append(work, func(ctx context.Context) error { return redis.Follow(ctx, hub) })
		}
	} else {
		mem := broadcast.NewMemoryBus(cfg.History, hub)
		bus, history, lineage = mem, mem, mem
	}
	var dash *dashSink
	if capturing {
		if dash = a.startDashboards(bus, history, replaced); dash != nil {
			bus = dash
		}
	}
	presence := a.startPresence(serving, redis, &work)

	var capture *cdc.Capture
	if capturing {
		capture = cdc.New(cdc.Config{
			DatabaseURL: cfg.DatabaseURL,
			Slot:        cfg.Slot,
			Publication: cfg.Publication,
			Tables:      cfg.Tables,
			Logger:      a.log,

			StatusInterval:    a.statusInterval,
			HeartbeatInterval: cfg.HeartbeatInterval,
			StallThreshold:    cfg.StallThreshold,
			MaxRetainedWAL:    cfg.MaxRetainedWAL,
			OnLost:            func() { resyncLost(hub) },
			Lineage:           epochLineage{lineageBus: lineage, dash: dash},
			NewEpoch:          cfg.NewEpoch,
			Transport:         cfg.Transport.TCP,
			QueryTimeout:      cfg.Transport.QueryTimeout,
			OnReplaced:        replaced,
		}, routeSink{router: schema.NewRouter(cfg.Tables), bus: bus, metrics: met, unroutable: newUnroutable(a.log, met.reg)})
		met.watchCapture(capture.Status)
		a.mu.Lock()
		a.capture = capture
		a.mu.Unlock()
		work = append(work, capture.Run)
		if dash != nil {
			work = append(work, dash.run(func() uint64 { return capture.Status().Confirmed }, func() bool { return capture.Status().Streaming }, met))
		}
	}

	ready := func(ctx context.Context) (bool, map[string]string) {
		ok, checks := true, map[string]string{}
		if redis != nil {
			if redis.Healthy() {
				checks["bus"] = "ok (redis)"
			} else {
				ok, checks["bus"] = false, "redis unreachable"
			}
		} else {
			checks["bus"] = "ok (in-process)"
		}
		if capture != nil {
			st := capture.Status()
			switch {
			case st.Stalled != "": // streaming but stalled, or a stalled session closed and being replaced
				ok, checks["replication"] = false, "stalled: "+st.Stalled
			case st.Streaming:
				checks["replication"] = "streaming"
			case st.Waiting != "" && a.mode == cmdCapture:
				// A standby capture is ready: it is doing its job by waiting.
				checks["replication"] = "standby: " + st.Waiting
			case st.Waiting != "":
				ok, checks["replication"] = false, "standby: "+st.Waiting
			case st.LastError != "":
				ok, checks["replication"] = false, "not streaming: "+st.LastError
			default:
				ok, checks["replication"] = false, "starting"
			}
			if st.Streaming && st.Liveness == "heartbeat" {
				checks["heartbeat"] = "lag " + st.HeartbeatLag.Round(time.Millisecond).String()
			}
		}
		return ok, checks
	}
	srv := broadcast.NewServer(broadcast.ServerConfig{
		Hub:            hub,
		Presence:       presence,
		History:        history,
		Verifier:       verifier,
		Logger:         a.log,
		AllowedOrigins: cfg.AllowedOrigins,
		TrustedProxies: cfg.Net.TrustedProxies,
		Ready:          a.redactedReady(ready),
		NoWebSocket:    !serving,
		Limits: broadcast.Limits{
			MaxConnections: cfg.MaxConns,
			MaxPerUser:     cfg.MaxConnsUser,
			ConnectRate:    cfg.ConnectRate,
			ConnectBurst:   int(2 * cfg.ConnectRate),
		},
	})
	if serving {
		work = append(work, srv.Watch)
		met.watchServer(hub, srv)
		srv.Handle("GET /", broadcast.WebHandler())
	}
	public := broadcast.NewConnLimiter(httpConnCap(cfg))
	met.watchListener("public", public)
	var internal http.Handler
	if cfg.Net.InternalListen != "" {
		internal = internalMux(srv, met)
	} else {
		// Back-compat: scrapers find /metrics on --listen. It holds counts
		// and names of tables, no secret; /readyz there has no detail.
		srv.Handle("GET /metrics", met.handler())
	}
	return a.serve(ctx, srv, public, internal, met, work...)
}

// redactedReady masks the configured secrets in the readiness details: a
// driver's error text is not ours to trust.
func (a *App) redactedReady(ready func(context.Context) (bool, map[string]string)) func(context.Context) (bool, map[string]string) {
	red := &redactor{}
	red.add(a.cfg)
	return func(ctx context.Context) (bool, map[string]string) {
		ok, checks := ready(ctx)
		for k, v := range checks {
			checks[k] = red.redact(v)
		}
		return ok, checks
	}
}

// resyncLost tells the clients of this process that changes were lost
// before they reached the bus (PostgreSQL invalidated the slot), and gives
// them a moment to receive it: capture stops right after, and with it the
// process.
func resyncLost(hub *broadcast.Hub) {
	hub.Resync("replication slot lost: changes were lost")
	if hub.Clients() > 0 {
		time.Sleep(time.Second)
	}
}

// appender is what capture needs of a bus.
type appender interface {
	Append(ctx context.Context, msgs []schema.Message) error
}

// checkRedis verifies the bus at start. A configuration problem (refused
// AUTH, a key of another type) stops walcast; an unreachable Redis is only
// logged: capture retries and does not confirm meanwhile.
func (a *App) checkRedis(ctx context.Context, r *broadcast.RedisBus) error {
	err := r.Check(ctx)
	var be *broadcast.BusError
	if errors.As(err, &be) {
		return err
	}
	if err != nil {
		a.log.Error("redis is unreachable; retrying in the background, not ready meanwhile", "err", err)
	}
	return nil
}

func newVerifier(cfg *Config) (*broadcast.Verifier, error) {
	ac := broadcast.AuthConfig{Secret: []byte(cfg.JWTSecret), Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience}
	if strings.Contains(cfg.JWTPublicKey, "-----BEGIN") {
		// Key text instead of a path: the file error would print it, and
		// it may be the private key.
		return nil, &usageError{"--jwt-public-key takes the path of a PEM file, not the key itself"}
	}
	if cfg.JWTPublicKey != "" {
		k, err := broadcast.LoadPublicKey(cfg.JWTPublicKey)
		if err != nil {
			return nil, &usageError{"--jwt-public-key: " + err.Error()}
		}
		ac.PublicKey = k
	}
	v, err := broadcast.NewVerifier(ac)
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	return v, nil
}

// serve listens, runs the background work next to the HTTP servers, and
// shuts them down in order when ctx ends. internal is nil without
// --internal-listen.
func (a *App) serve(ctx context.Context, srv *broadcast.Server, limit *broadcast.ConnLimiter, internal http.Handler, met *metrics, work ...func(context.Context) error) error {
	pub, err := a.listen("public", a.cfg.Listen, srv.Handler(), limit, false)
	if err != nil {
		return err
	}
	listeners := []*listener{pub}
	if internal != nil {
		ilimit := broadcast.NewConnLimiter(internalConnCap)
		met.watchListener("internal", ilimit)
		in, err := a.listen("internal", a.cfg.Net.InternalListen, internal, ilimit, true)
		if err != nil {
			pub.ln.Close()
			return err
		}
		listeners = append(listeners, in)
		a.internalAddr = in.ln.Addr().String()
	}
	a.addr = pub.ln.Addr().String()
	close(a.listening)
	if a.internalAddr != "" {
		a.log.Info("listening", "addr", a.addr, "internal", a.internalAddr)
	} else {
		a.log.Info("listening", "addr", a.addr)
	}

	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range listeners {
		g.Go(l.serve)
	}
	for _, w := range work {
		g.Go(func() error { return w(workCtx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		// Capture first: it stores and confirms what it already read.
		stopWork()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 8*time.Second)
		defer cancel()
		for _, l := range listeners {
			l.shutdown(shutdownCtx)
		}
		srv.Shutdown(shutdownCtx)
		return nil
	})
	err = g.Wait()
	a.log.Info("stopped")
	return err
}
