package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/dashboard"
	"github.com/walcast/walcast/pipeline"
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

	mu         sync.Mutex
	capture    *cdc.Capture
	dashboards *dashboard.Builder // nil unless the process computes dashboards

	state broadcast.StateStore // the bus's live state, once Run opened it (under mu)

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

// parts returns capture and the dashboard builder once Run created them
// (nil before, and for a process without them).
func (a *App) parts() (*cdc.Capture, *dashboard.Builder) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.capture, a.dashboards
}

// State returns the bus's live state once Run opened the bus, else nil.
func (a *App) State() broadcast.StateStore {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Status returns the capture's progress (zero before it starts).
func (a *App) Status() cdc.Status {
	if c, _ := a.parts(); c != nil {
		return c.Status()
	}
	return cdc.Status{}
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
	capturing := a.mode == cmdRun || a.mode == cmdCapture
	serving := a.mode == cmdRun || a.mode == cmdServe
	verifier, err := a.checkConfig(capturing, serving)
	if err != nil {
		return err
	}
	a.log.Info("starting", "command", a.mode, "version", version)
	hub := broadcast.NewHub(a.cfg.ClientWindow)
	met := newMetrics()
	replaced := met.watchReplaced()

	bus, err := a.openBus(ctx, hub, met, replaced)
	if err != nil {
		return err
	}
	defer bus.Close()
	a.mu.Lock()
	a.state = bus
	a.mu.Unlock()
	var work []func(context.Context) error
	if serving {
		work = append(work, bus.deliver(ctx, hub, a.log)...)
	}
	ready := readiness{bus: bus, standbyReady: a.mode == cmdCapture}
	if capturing {
		var captureWork []func(context.Context) error
		ready.capture, captureWork = a.startCapture(bus, hub, met, replaced)
		work = append(work, captureWork...)
	}
	var presence *broadcast.Presence
	if serving {
		var link func(context.Context) error
		if presence, link = a.startPresence(bus.redis); link != nil {
			work = append(work, link)
		}
	}

	srv := a.newServer(hub, presence, bus, verifier, ready, serving)
	if serving {
		work = append(work, srv.Watch)
		met.watchServer(hub, srv)
		srv.Handle("GET /", broadcast.WebHandler())
	}
	public := broadcast.NewConnLimiter(httpConnCap(a.cfg))
	met.watchListener("public", public)
	var internal http.Handler
	if a.cfg.Net.InternalListen != "" {
		internal = internalMux(srv, met)
	} else {
		// Back-compat: scrapers find /metrics on --listen. It holds counts
		// and names of tables, no secret; /readyz there has no detail.
		srv.Handle("GET /metrics", met.handler())
	}
	return a.serve(ctx, srv, public, internal, met, work...)
}

// checkConfig refuses a configuration the command cannot run with, and
// returns the token verifier of a serving process.
func (a *App) checkConfig(capturing, serving bool) (*broadcast.Verifier, error) {
	if capturing && a.cfg.DatabaseURL == "" {
		return nil, &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	if a.mode != cmdRun && a.cfg.RedisURL == "" {
		return nil, &usageError{"--redis-url (or WALCAST_REDIS_URL, REDIS_URL) is required: capture and serve meet in a Redis stream"}
	}
	if !serving {
		return nil, nil
	}
	return newVerifier(a.cfg)
}

// startCapture creates capture, storing into bus through the pipeline,
// with the dashboards when they are on; it returns capture and its loops.
func (a *App) startCapture(bus *processBus, hub *broadcast.Hub, met *metrics, replaced func(conn, reason string)) (*cdc.Capture, []func(context.Context) error) {
	cfg := a.cfg
	builder, dash := a.startDashboards(bus, replaced)
	router := schema.NewRouter(cfg.Tables)
	sink := pipeline.NewSink(router, bus, storeObserver{met, newUnroutable(a.log, met.reg)}, dash)
	capture := cdc.New(cdc.Config{
		DatabaseURL: cfg.DatabaseURL,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Tables:      cfg.Tables,
		Logger:      a.log,

		StatusInterval:    a.statusInterval,
		HeartbeatInterval: cfg.HeartbeatInterval,
		StallThreshold:    cfg.StallThreshold,
		MaxRetainedWAL:    cfg.MaxRetainedWAL,
		OnKeys:            router.SetKeys,
		OnLost:            func() { resyncLost(hub) },
		Lineage:           epochLineage{lineageBus: bus, dash: dash},
		NewEpoch:          cfg.NewEpoch,
		Transport:         cfg.Transport.TCP,
		QueryTimeout:      cfg.Transport.QueryTimeout,
		OnReplaced:        replaced,
		State:             stateLoader(cfg, router, bus),
	}, sink)
	met.watchCapture(capture.Status)
	a.mu.Lock()
	a.capture = capture
	a.mu.Unlock()
	work := []func(context.Context) error{capture.Run}
	if dash != nil {
		met.watchDashboards(builder.Stats)
		emit, ready := dash.Loop(func() (uint64, bool) {
			st := capture.Status()
			return st.Confirmed, st.Streaming
		})
		work = append(work, func(ctx context.Context) error { return builder.Run(ctx, emit, ready) })
	}
	return capture, work
}

// newServer returns the HTTP server: /ws when serving, the probes always.
func (a *App) newServer(hub *broadcast.Hub, presence *broadcast.Presence, bus *processBus, verifier *broadcast.Verifier, ready readiness, serving bool) *broadcast.Server {
	cfg := a.cfg
	return broadcast.NewServer(broadcast.ServerConfig{
		Hub:            hub,
		Presence:       presence,
		History:        bus,
		Verifier:       verifier,
		Logger:         a.log,
		AllowedOrigins: cfg.AllowedOrigins,
		TrustedProxies: cfg.Net.TrustedProxies,
		Ready:          a.redactedReady(ready.check),
		NoWebSocket:    !serving,
		MessageTypes:   customTypes(cfg.Tables),
		State:          bus,
		StateTables:    stateTables(cfg.Tables),
		Limits: broadcast.Limits{
			MaxConnections: cfg.MaxConns,
			MaxPerUser:     cfg.MaxConnsUser,
			ConnectRate:    cfg.ConnectRate,
			ConnectBurst:   int(2 * cfg.ConnectRate),
		},
	})
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

// newVerifier returns the verifier of access tokens that cfg configures.
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

// stateTables maps the tracked tables to their message types, for sync
// to name those it has no state of.
func stateTables(tables []schema.Table) map[string]string {
	out := make(map[string]string, len(tables))
	for _, t := range tables {
		out[t.Qualified()] = t.MessageType()
	}
	return out
}

// customTypes returns the message types of the custom tables (a config
// file's type: announcement_update), which subscriptions may name.
func customTypes(tables []schema.Table) []string {
	var out []string
	for _, t := range tables {
		if t.Kind == "" {
			out = append(out, t.MessageType())
		}
	}
	return out
}
