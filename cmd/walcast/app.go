package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	cfg *Config
	log *slog.Logger

	listening chan struct{}
	addr      string

	mu      sync.Mutex
	capture *cdc.Capture
}

// NewApp returns an App for cfg; call Run.
func NewApp(cfg *Config, log *slog.Logger) *App {
	return &App{cfg: cfg, log: log, listening: make(chan struct{})}
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
	router *schema.Router
	bus    interface {
		Append(ctx context.Context, msgs []schema.Message) error
	}
}

func (s routeSink) Store(ctx context.Context, txs []schema.Tx) error {
	n := 0
	for i := range txs {
		n += len(txs[i].Changes)
	}
	if n == 0 {
		return nil
	}
	msgs := make([]schema.Message, 0, n)
	for i := range txs {
		for j := range txs[i].Changes {
			if m, ok := s.router.Route(&txs[i], &txs[i].Changes[j]); ok {
				msgs = append(msgs, m)
			}
		}
	}
	return s.bus.Append(ctx, msgs)
}

// Run runs `walcast run` until ctx is cancelled, then shuts down: capture
// stores and confirms what it read, clients are closed with 1001 so they
// reconnect elsewhere.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
	if cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	if cfg.RedisURL != "" {
		return &usageError{"--redis-url: the Redis Streams bus is not available in this version; leave it empty for the in-process bus"}
	}
	verifier, err := newVerifier(cfg)
	if err != nil {
		return err
	}
	hub := broadcast.NewHub(0)
	bus := broadcast.NewMemoryBus(cfg.History, hub)
	capture := cdc.New(cdc.Config{
		DatabaseURL: cfg.DatabaseURL,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Tables:      cfg.Tables,
		Logger:      a.log,
	}, routeSink{router: schema.NewRouter(cfg.Tables), bus: bus})
	a.mu.Lock()
	a.capture = capture
	a.mu.Unlock()

	srv := broadcast.NewServer(broadcast.ServerConfig{
		Hub:            hub,
		History:        bus,
		Verifier:       verifier,
		Logger:         a.log,
		AllowedOrigins: cfg.AllowedOrigins,
		Ready: func(ctx context.Context) (bool, map[string]string) {
			st := capture.Status()
			checks := map[string]string{"bus": "ok (in-process)"}
			switch {
			case st.Streaming:
				checks["replication"] = "streaming"
			case st.Waiting != "":
				checks["replication"] = "standby: " + st.Waiting
			case st.LastError != "":
				checks["replication"] = "not streaming: " + st.LastError
			default:
				checks["replication"] = "starting"
			}
			return st.Streaming, checks
		},
	})
	return a.serve(ctx, srv, capture.Run)
}

func newVerifier(cfg *Config) (*broadcast.Verifier, error) {
	ac := broadcast.AuthConfig{Secret: []byte(cfg.JWTSecret)}
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

// serve listens, runs the background work next to the HTTP server, and
// shuts both down in order when ctx ends.
func (a *App) serve(ctx context.Context, srv *broadcast.Server, work func(context.Context) error) error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Listen, err)
	}
	a.addr = ln.Addr().String()
	close(a.listening)
	a.log.Info("listening", "addr", a.addr)

	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		err := work(workCtx)
		if err != nil {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Capture first: it stores and confirms what it already read.
		stopWork()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 8*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shutdownCtx)
		srv.Shutdown(shutdownCtx)
		return nil
	})
	err = g.Wait()
	a.log.Info("stopped")
	return err
}
