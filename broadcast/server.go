package broadcast

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Hub      *Hub
	History  History
	Verifier *Verifier
	Logger   *slog.Logger

	// AllowedOrigins are patterns for browser Origins allowed to open /ws:
	// "https://app.example.com", "*.example.com" (any scheme), or
	// "http://localhost:*". Empty means same origin only. Requests without
	// an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// Ready reports readiness for /readyz: whether the server should get
	// traffic, and the state of each dependency as "state" or
	// "state: detail". The public /readyz shows only the state; the
	// detail (raw errors that may name a database user, host or database)
	// is served by DetailedReadyHandler, for the internal listener.
	Ready func(ctx context.Context) (bool, map[string]string)
	// TrustedProxies are the TCP peers whose X-Forwarded-For is read to
	// find the client's address (see clientAddr); empty: the header is
	// ignored and the client is the TCP peer.
	TrustedProxies []netip.Prefix
	// NoWebSocket serves only the health endpoints (walcast capture).
	NoWebSocket bool
	// Limits caps connections in total, per user and per IP rate.
	Limits Limits
	// PingInterval is how often the server pings each client (default
	// 25 s); a client that does not answer within PongTimeout (default
	// 10 s) is dropped, so dead connections do not linger.
	PingInterval, PongTimeout time.Duration
	// WriteTimeout is how long a write may hang before Watch closes the
	// connection (default 10 s).
	WriteTimeout time.Duration
	// Presence tracks who is online; an in-process one when nil.
	Presence *Presence
	// MessageTypes are the message types of custom tables (a config
	// file's type: announcement_update), which subscriptions may name
	// beside the built-in ones.
	MessageTypes []string
	// State answers sync frames (see sync.go); nil: sync is answered
	// with an error. StateTables maps the tracked tables (qualified) to
	// their message types, so that a sync names the tables asked for that
	// have no state.
	State       StateStore
	StateTables map[string]string
}

// Server serves the WebSocket endpoint and health checks.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	mux *http.ServeMux
	// customTypes is cfg.MessageTypes as a set; read-only after NewServer.
	customTypes map[string]bool

	mu       sync.Mutex
	closing  bool
	total    int
	perUser  map[int64]int
	sessions sync.WaitGroup
	limiter  *rateLimiter
	refused  map[string]uint64 // upgrades refused, by reason
	resumes  atomic.Uint64
	presence *Presence
	// stateReads shares reads of the live state among syncs; syncs
	// counts the syncs served.
	stateReads stateReads
	syncs      atomic.Uint64
}

// Refused returns how many upgrades were refused, by reason (an AuthError
// reason, or origin, rate_limited, user_limit, server_full).
func (s *Server) Refused() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.refused))
	for k, v := range s.refused {
		out[k] = v
	}
	return out
}

// Resumes returns how many resume requests were served.
func (s *Server) Resumes() uint64 { return s.resumes.Load() }

// Syncs returns how many syncs were served.
func (s *Server) Syncs() uint64 { return s.syncs.Load() }

func (s *Server) refuse(reason string) {
	s.mu.Lock()
	s.refused[reason]++
	s.mu.Unlock()
}

// NewServer returns a Server; mount Handler on an http.Server.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Presence == nil {
		cfg.Presence = NewPresence()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), perUser: map[int64]int{}, refused: map[string]uint64{}, presence: cfg.Presence,
		limiter:    newRateLimiter(cfg.Limits.ConnectRate, cfg.Limits.ConnectBurst, cfg.Limits.MaxTrackedAddrs),
		stateReads: stateReads{store: cfg.State}}
	if len(cfg.MessageTypes) > 0 {
		s.customTypes = make(map[string]bool, len(cfg.MessageTypes))
		for _, t := range cfg.MessageTypes {
			s.customTypes[t] = true
		}
	}
	if !cfg.NoWebSocket {
		s.mux.HandleFunc("GET /ws", s.serveWS)
	}
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.serveReady(w, r, false) })
	return s
}

// Watch runs the write watchdog until ctx ends: a connection whose write
// has been blocked for longer than the write timeout (a client that stopped
// reading while no further traffic arrived to push it out of the window)
// is closed, so it does not hold its resources forever.
func (s *Server) Watch(ctx context.Context) error {
	t := time.NewTicker(s.cfg.WriteTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			limit := now.Add(-s.cfg.WriteTimeout).UnixNano()
			s.cfg.Hub.each(func(c *client) {
				if w := c.writingSince.Load(); w != 0 && w < limit {
					c.logger().Info("closing a connection whose write hung", "for", now.Sub(time.Unix(0, w)).Round(time.Second))
					go c.ws.CloseNow()
				}
			})
		}
	}
}

// Handle adds a handler to the server's mux (pages, metrics).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Shutdown closes every client with 1001 (going away) so it reconnects
// elsewhere, and waits for their sessions to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	go s.cfg.Hub.closeAll(websocket.StatusGoingAway, "server shutting down", 5*time.Second)
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// HealthHandler serves /healthz, for a listener other than Handler's.
func (s *Server) HealthHandler() http.Handler { return http.HandlerFunc(s.serveHealth) }

// DetailedReadyHandler serves /readyz with each check's detail, raw errors
// included: mount it only on a listener the public cannot reach.
func (s *Server) DetailedReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveReady(w, r, true) })
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request, detail bool) {
	ready, checks := true, map[string]string{}
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		ready, checks = s.cfg.Ready(ctx)
		cancel()
	}
	if !detail {
		public := make(map[string]string, len(checks))
		for k, v := range checks {
			public[k] = checkState(v)
		}
		checks = public
	}
	code := http.StatusOK
	status := "ready"
	if !ready {
		code, status = http.StatusServiceUnavailable, "not ready"
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}

// checkState is the public part of a readiness check, "state" of
// "state: detail".
func checkState(v string) string {
	if i := strings.Index(v, ":"); i >= 0 {
		return v[:i]
	}
	return v
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// tokenFrom reads the access token from ?token= (what browsers can send)
// or an Authorization: Bearer header.
func tokenFrom(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// RedactedPath is the request path and query with the token removed, for
// logs: tokens never appear in them.
func RedactedPath(u *url.URL) string {
	q := u.Query()
	if q.Has("token") {
		q.Set("token", "REDACTED")
		return u.Path + "?" + q.Encode()
	}
	return u.RequestURI()
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	addr, peer := clientAddr(r, s.cfg.TrustedProxies)
	log := s.log.With("remote", addr.String(), "path", RedactedPath(r.URL))
	if peer != addr {
		log = log.With("proxy", peer.String())
	}
	p, ok := s.authorize(w, r, log, addr)
	if !ok {
		return
	}
	since, sub, syncReq, ok := s.connectQuery(w, r)
	if !ok {
		return
	}
	if code, msg := s.admit(p); code != 0 {
		log.Info("websocket refused", "reason", msg)
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, msg, code)
		return
	}
	bw := &batchingWriter{ResponseWriter: w}
	ws, err := websocket.Accept(bw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // the Origin was checked above, against our own patterns
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		s.release(p)
		log.Info("websocket upgrade failed", "err", err)
		return
	}
	ws.SetReadLimit(MaxClientFrame)
	bw.conn.startFraming()
	c := s.newClient(ws, bw, p, sub)
	c.remote, c.proxy, c.path = addr, peer, RedactedPath(r.URL)
	if syncReq != nil {
		// The sync replaces the resume: state_end's position follows.
		c.syncAtConnect = narrow(p, *syncReq)
		since = nil
	}
	// Register before reading history: messages published from now on
	// queue up, everything earlier is in history, and the id check skips
	// the overlap.
	at := s.cfg.Hub.add(c)
	// The session runs on a goroutine of its own and this handler returns:
	// net/http's connection state (its 8 KiB of buffers, the request) and
	// the handler's deep stack are then freed, which is most of what an
	// idle connection would otherwise hold. Shutdown still reaches the
	// session through the hub and waits for it through s.sessions.
	go func() {
		defer s.release(p)
		defer s.cfg.Hub.remove(c)
		defer s.presence.leave(c)
		debug := s.log.Enabled(context.Background(), slog.LevelDebug)
		if debug {
			c.logger().Debug("websocket connected")
		}
		err := s.session(c, at, since)
		ws.CloseNow()
		if debug {
			c.logger().Debug("websocket closed", "reason", err)
		}
	}()
}

// authorize applies the connection rate limit, the token and the Origin
// check, before the upgrade: a refusal is a plain HTTP error (a bad token
// a 401). It returns false when it refused.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, log *slog.Logger, addr netip.Addr) (*Principal, bool) {
	if !s.limiter.allow(addrKey(addr), time.Now()) {
		s.refuse("rate_limited")
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many requests: new connections from this address are rate-limited; retry with backoff", http.StatusTooManyRequests)
		return nil, false
	}
	p, err := s.cfg.Verifier.Verify(tokenFrom(r))
	if err != nil {
		var ae *AuthError
		reason, label := "unauthorized", "malformed"
		if errors.As(err, &ae) {
			reason, label = ae.Detail, ae.Reason
		}
		s.refuse(label)
		log.Info("websocket refused", "reason", reason)
		http.Error(w, "unauthorized: "+reason, http.StatusUnauthorized)
		return nil, false
	}
	if !s.originAllowed(r) {
		s.refuse("origin")
		log.Info("websocket refused: origin not allowed", "origin", r.Header.Get("Origin"))
		http.Error(w, "forbidden: origin "+r.Header.Get("Origin")+" is not allowed", http.StatusForbidden)
		return nil, false
	}
	return p, true
}

// connectQuery reads the resume position (since) and the subscription
// given at connect; it answers 400 and returns false when one is bad.
func (s *Server) connectQuery(w http.ResponseWriter, r *http.Request) (since *schema.Position, sub, sync *clientFrame, ok bool) {
	if v := r.URL.Query().Get("since"); v != "" {
		pos, err := schema.ParsePosition(v)
		if err != nil {
			http.Error(w, "bad request: since is not a message id", http.StatusBadRequest)
			return nil, nil, nil, false
		}
		since = &pos
	}
	sub, err := subscriptionFrom(r.URL.Query(), s.customTypes)
	if err == nil {
		sync, err = syncFrom(r.URL.Query(), sub, s.customTypes)
	}
	if err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return nil, nil, nil, false
	}
	return since, sub, sync, true
}

// newClient returns the session state of an accepted connection of p. The
// client starts owning its writes: nothing is delivered before the
// welcome (see session).
func (s *Server) newClient(ws *websocket.Conn, bw *batchingWriter, p *Principal, sub *clientFrame) *client {
	c := &client{ws: ws, srv: s, batch: bw.conn, idx: -1}
	c.own.Lock()
	c.principal.Store(p)
	if sub != nil {
		// A subscription given at connect applies to the replay too.
		c.filter.Store(narrow(p, *sub))
	}
	return c
}

// admit counts a new session against the limits, returning an HTTP status
// and message when it must be refused.
func (s *Server) admit(p *Principal) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return http.StatusServiceUnavailable, "shutting down: reconnect to another replica"
	case s.total >= s.cfg.Limits.MaxConnections:
		s.refused["server_full"]++
		return http.StatusServiceUnavailable, "server full: too many connections; retry with backoff"
	case p.HasUser && s.perUser[p.UserID] >= s.cfg.Limits.MaxPerUser:
		s.refused["user_limit"]++
		return http.StatusTooManyRequests, "too many connections for this user: close other tabs or devices"
	}
	s.total++
	if p.HasUser {
		s.perUser[p.UserID]++
	}
	s.sessions.Add(1)
	return 0, ""
}

func (s *Server) release(p *Principal) {
	s.mu.Lock()
	s.total--
	if p.HasUser {
		if s.perUser[p.UserID]--; s.perUser[p.UserID] <= 0 {
			delete(s.perUser, p.UserID)
		}
	}
	s.mu.Unlock()
	s.sessions.Done()
}

// subscriptionFrom reads a subscription given at connect:
// ?types=guarantee_update,voting_update&committees=3,4 (either or both),
// validated like a subscribe frame. nil when neither is given.
func subscriptionFrom(q url.Values, custom map[string]bool) (*clientFrame, error) {
	if !q.Has("types") && !q.Has("committees") {
		return nil, nil
	}
	f := clientFrame{Type: "subscribe", Types: []string{}}
	if q.Has("types") {
		for _, t := range strings.Split(q.Get("types"), ",") {
			if t = strings.TrimSpace(t); t != "" {
				f.Types = append(f.Types, t)
			}
		}
	} else {
		f.Types = nil
	}
	if q.Has("committees") {
		f.Committees = []int64{}
		for _, c := range strings.Split(q.Get("committees"), ",") {
			if c = strings.TrimSpace(c); c == "" {
				continue
			}
			id, err := strconv.ParseInt(c, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("committees: %q is not a committee id", c)
			}
			f.Committees = append(f.Committees, id)
		}
	}
	for _, t := range f.Types {
		if !knownTypes[t] && !custom[t] {
			return nil, fmt.Errorf("types: unknown message type %q", t)
		}
	}
	return &f, nil
}

// originAllowed applies --allowed-origins; see ServerConfig.AllowedOrigins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(s.cfg.AllowedOrigins) == 0 {
		return strings.EqualFold(u.Host, r.Host)
	}
	for _, pat := range s.cfg.AllowedOrigins {
		pat = strings.ToLower(strings.TrimSpace(pat))
		if pat == "*" {
			return true
		}
		target := strings.ToLower(u.Host)
		if strings.Contains(pat, "://") {
			target = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		if ok, _ := path.Match(pat, target); ok {
			return true
		}
	}
	return false
}
