package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"

	"github.com/walcast/walcast/broadcast"
)

// netConfig holds the settings of walcast's HTTP listeners.
type netConfig struct {
	// InternalListen is the operators' address (metrics, detailed
	// readiness, pprof); empty: none, and /metrics stays on --listen.
	InternalListen string
	// MaxHTTPConns caps the TCP connections --listen holds open; 0:
	// derived from --max-connections (see httpConnCap).
	MaxHTTPConns   int
	TrustedProxies []netip.Prefix
}

// httpConnCap is the cap on --listen's TCP connections: the flag, or
// --max-connections plus headroom for plain HTTP (health checks, the page,
// upgrades being refused), so that WebSockets reach their own cap, with its
// clear 503, before the listener starts closing connections.
func httpConnCap(cfg *Config) int {
	if cfg.Net.MaxHTTPConns > 0 {
		return cfg.Net.MaxHTTPConns
	}
	ws := cfg.MaxConns
	if ws <= 0 {
		ws = 20000
	}
	return ws + max(100, ws/10)
}

// internalConnCap caps the internal listener: scrapers and probes only.
const internalConnCap = 256

// httpTimeouts bound what one HTTP connection may hold outside a
// WebSocket session.
type httpTimeouts struct {
	// readHeader: a request's headers must arrive within it (slowloris).
	readHeader time.Duration
	// read: the whole request, body included.
	read time.Duration
	// write: the response (the internal listener allows long pprof
	// profiles).
	write time.Duration
	// idle: a keep-alive connection waiting for its next request. Longer
	// than the 60 s idle timeout of common load balancers, so that they,
	// not walcast, close their pooled connections (no race on reuse).
	idle time.Duration
}

var defaultTimeouts = httpTimeouts{readHeader: 10 * time.Second, read: 30 * time.Second, write: 30 * time.Second, idle: 90 * time.Second}

// maxHeaderBytes bounds a request's headers (net/http allows 1 MiB): a
// token, cookies and a proxy chain fit in far less.
const maxHeaderBytes = 64 << 10

func (a *App) timeouts() httpTimeouts {
	if a.httpTimeouts != nil {
		return *a.httpTimeouts
	}
	return defaultTimeouts
}

func (a *App) httpServer(h http.Handler, internal bool) *http.Server {
	t := a.timeouts()
	write := t.write
	if internal {
		write = 5 * time.Minute
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.readHeader,
		ReadTimeout:       t.read,
		WriteTimeout:      write,
		IdleTimeout:       t.idle,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// internalMux is what --internal-listen serves. /debug/pprof/cmdline is
// left out: it would print the command line, secrets given as flags
// included.
func internalMux(srv *broadcast.Server, met *metrics) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", met.handler())
	mux.Handle("GET /healthz", srv.HealthHandler())
	mux.Handle("GET /readyz", srv.DetailedReadyHandler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// listener is one HTTP server on its own address, with its connection cap.
type listener struct {
	name  string
	ln    net.Listener
	srv   *http.Server
	limit *broadcast.ConnLimiter
}

func (a *App) listen(name, addr string, h http.Handler, limit *broadcast.ConnLimiter, internal bool) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil && internal {
		return nil, fmt.Errorf("listen on %s (--internal-listen): %w", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &listener{name: name, ln: limit.Listener(ln), srv: a.httpServer(h, internal), limit: limit}, nil
}

func (l *listener) serve() error {
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http (%s): %w", l.name, err)
	}
	return nil
}

func (l *listener) shutdown(ctx context.Context) { _ = l.srv.Shutdown(ctx) }

// InternalAddr waits until the HTTP servers listen and returns the
// internal listener's address ("" when there is none).
func (a *App) InternalAddr(ctx context.Context) (string, error) {
	if _, err := a.Addr(ctx); err != nil {
		return "", err
	}
	return a.internalAddr, nil
}
