package broadcast

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/walcast/walcast/schema"
)

// testServer is a Server with an in-process bus on a real listener.
type testServer struct {
	url string
	bus *MemoryBus
	hub *Hub
	seq uint64
}

func newTestServer(t *testing.T, window int, origins ...string) *testServer {
	t.Helper()
	hub := NewHub(window)
	bus := NewMemoryBus(1000, hub)
	_, url := startServer(t, ServerConfig{Hub: hub, History: bus, AllowedOrigins: origins})
	return &testServer{url: url, bus: bus, hub: hub}
}

// startServer runs a Server of cfg on a real listener until the test
// ends, with the test secret's verifier and a silent logger unless cfg
// sets them. It returns the server and its base URL.
func startServer(t testing.TB, cfg ServerConfig) (*Server, string) {
	t.Helper()
	if cfg.Verifier == nil {
		v, err := NewVerifier(AuthConfig{Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Verifier = v
	}
	if cfg.Logger == nil {
		cfg.Logger = discard()
	}
	srv := NewServer(cfg)
	hs := newHTTPServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	})
	return srv, hs.URL
}

// eventually polls cond until it holds or limit, a generous liveness
// bound, passes; it reports whether cond held.
func eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling for a state, not waiting it out
	}
	return true
}

// dialWS opens a WebSocket to the server at url with tok and query.
func dialWS(t testing.TB, url, tok, query string) (*websocket.Conn, error) {
	u := strings.Replace(url, "http", "ws", 1) + "/ws?token=" + tok
	if query != "" {
		u += "&" + query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	return conn, nil
}

// publish stores one message with the given scope; committee/owner 0 mean none.
func (s *testServer) publish(t *testing.T, typ string, committee, owner int64) schema.Position {
	t.Helper()
	s.seq++
	pos := schema.Position{LSN: 1000 + s.seq}
	m := schema.Message{Pos: pos, Type: typ, Committee: committee, HasCommittee: committee != 0, Owner: owner, HasOwner: owner != 0}
	m.JSON = []byte(fmt.Sprintf(`{"id":%q,"type":%q,"committee":%d,"owner":%d}`, pos, typ, committee, owner))
	if err := s.bus.Append(context.Background(), []schema.Message{m}); err != nil {
		t.Fatal(err)
	}
	return pos
}

func mint(t testing.TB, user int64, role string, committees ...int64) string {
	t.Helper()
	tok, err := MintToken(secret, user, role, committees, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type wsc struct {
	t    *testing.T
	conn *websocket.Conn
}

func connect(t *testing.T, s *testServer, tok, query string) *wsc {
	t.Helper()
	conn, err := dialWS(t, s.url, tok, query)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &wsc{t: t, conn: conn}
	if w := c.read(); w["type"] != "welcome" {
		t.Fatalf("first frame %v, want welcome", w)
	}
	return c
}

func (c *wsc) read() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return m
}

func (c *wsc) send(frame string) {
	c.t.Helper()
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// ids reads n frames and returns their ids.
func (c *wsc) ids(n int) []string {
	c.t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, c.read()["id"].(string))
	}
	return out
}

func TestScopedDelivery(t *testing.T) {
	s := newTestServer(t, 0)
	admin := connect(t, s, mint(t, 1, "admin"), "")
	sup := connect(t, s, mint(t, 2, "supervisor", 3), "")
	user := connect(t, s, mint(t, 12, "agent"), "")

	a := s.publish(t, schema.TypeGuarantee, 3, 99)  // committee 3
	b := s.publish(t, schema.TypeGuarantee, 4, 12)  // user 12's row in committee 4
	c := s.publish(t, schema.TypeVoting, 5, 0)      // committee 5 only
	d := s.publish(t, schema.TypeVoting, 0, 0)      // election-wide
	e := s.publish(t, schema.TypeAttendance, 3, 12) // both

	check := func(name string, cl *wsc, want ...schema.Position) {
		t.Helper()
		got := cl.ids(len(want))
		for i := range want {
			if got[i] != want[i].String() {
				t.Errorf("%s got %v, want %v", name, got, want)
				return
			}
		}
	}
	check("admin", admin, a, b, c, d, e)
	check("supervisor of 3", sup, a, d, e)
	check("user 12", user, b, d, e)
}

func TestSubscribeNarrowsAndNeverWidens(t *testing.T) {
	s := newTestServer(t, 0)
	sup := connect(t, s, mint(t, 2, "supervisor", 3, 4), "")
	sup.send(`{"type":"subscribe","types":["voting_update"],"committees":[4,9]}`)
	sub := sup.read()
	if sub["type"] != "subscribed" || fmt.Sprint(sub["committees"]) != "[4]" || fmt.Sprint(sub["types"]) != "[voting_update]" {
		t.Fatalf("subscribed = %v, want types [voting_update], committees [4] (9 is not in the token)", sub)
	}
	s.publish(t, schema.TypeGuarantee, 4, 0) // wrong type
	s.publish(t, schema.TypeVoting, 3, 0)    // committee not subscribed
	s.publish(t, schema.TypeVoting, 9, 0)    // not allowed by the token
	want := s.publish(t, schema.TypeVoting, 4, 0)
	if got := sup.ids(1)[0]; got != want.String() {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestBadUpgradesGetPlainHTTPErrors(t *testing.T) {
	s := newTestServer(t, 0, "https://app.example.com", "*.trusted.org")
	get := func(path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("GET", s.url+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp.StatusCode, "" // the body is the WebSocket now
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tok := mint(t, 1, "admin")
	cases := []struct {
		name string
		path string
		hdr  map[string]string
		code int
		body string
	}{
		{"no token", "/ws", nil, 401, "no token"},
		{"garbage token", "/ws?token=abc", nil, 401, "not a JWT"},
		{"foreign origin", "/ws?token=" + tok, map[string]string{"Origin": "https://evil.example"}, 403, "evil.example"},
		{"allowed origin", "/ws?token=" + tok, map[string]string{"Origin": "https://app.example.com"}, 101, ""},
		{"wildcard origin", "/ws?token=" + tok, map[string]string{"Origin": "https://x.trusted.org"}, 101, ""},
		{"bearer header", "/ws", map[string]string{"Authorization": "Bearer " + tok}, 101, ""},
		{"bad since", "/ws?since=nope&token=" + tok, nil, 400, "since"},
	}
	for _, c := range cases {
		code, body := get(c.path, c.hdr)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, code, body, c.code, c.body)
		}
	}
}

// Every kind of bad token gets HTTP 401 with a one-line reason, and no
// WebSocket.
func TestEveryBadTokenGets401(t *testing.T) {
	hub := NewHub(0)
	bus := NewMemoryBus(10, hub)
	v, _ := NewVerifier(AuthConfig{Secret: secret, Issuer: "election"})
	hs := newHTTPServer(NewServer(ServerConfig{Hub: hub, History: bus, Verifier: v, Logger: discard()}))
	defer hs.Close()
	now := time.Now()
	claims := func(k string, val any) jwt.MapClaims {
		c := jwt.MapClaims{"user_id": 1, "role": "admin", "exp": now.Add(time.Hour).Unix(), "iss": "election"}
		c[k] = val
		return c
	}
	tokens := map[string]string{
		"no token":      "",
		"garbage":       "garbage",
		"wrong key":     sign(t, jwt.SigningMethodHS256, []byte("wrong"), claims("x", 1)),
		"alg none":      sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("x", 1)),
		"expired":       sign(t, jwt.SigningMethodHS256, secret, claims("exp", now.Add(-time.Hour).Unix())),
		"not yet valid": sign(t, jwt.SigningMethodHS256, secret, claims("nbf", now.Add(time.Hour).Unix())),
		"refresh":       sign(t, jwt.SigningMethodHS256, secret, claims("token_type", "refresh")),
		"wrong issuer":  sign(t, jwt.SigningMethodHS256, secret, claims("iss", "other")),
	}
	for name, tok := range tokens {
		_, resp, err := websocket.Dial(context.Background(), strings.Replace(hs.URL, "http", "ws", 1)+"/ws?token="+tok, nil)
		if err == nil {
			t.Errorf("%s: connected", name)
			continue
		}
		if resp == nil || resp.StatusCode != 401 {
			t.Errorf("%s: %v, want HTTP 401", name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if lines := strings.Count(strings.TrimSpace(string(b)), "\n"); lines != 0 || !strings.HasPrefix(string(b), "unauthorized: ") {
			t.Errorf("%s: body %q, want one line", name, b)
		}
	}
	good := sign(t, jwt.SigningMethodHS256, secret, claims("x", 1))
	c, _, err := websocket.Dial(context.Background(), strings.Replace(hs.URL, "http", "ws", 1)+"/ws?token="+good, nil)
	if err != nil {
		t.Fatalf("good token: %v", err)
	}
	c.CloseNow()
}

func TestMalformedFramesLeaveTheConnectionUp(t *testing.T) {
	s := newTestServer(t, 0)
	c := connect(t, s, mint(t, 1, "admin"), "")
	for _, f := range []string{`nonsense`, `{"type":"dance"}`, `{"type":"resume","since":"x"}`, `[]`} {
		c.send(f)
		if m := c.read(); m["type"] != "error" {
			t.Errorf("%s: got %v, want an error frame", f, m)
		}
	}
	c.send(`{"type":"ping"}`)
	if m := c.read(); m["type"] != "pong" {
		t.Errorf("got %v, want pong", m)
	}
	// A frame over 64 KiB closes with 1009.
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", MaxClientFrame) + `"}`)
	_, _, err := c.conn.Read(context.Background())
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("oversized frame: %v, want close 1009", err)
	}
}

func TestResumeReplaysExactlyWhatWasMissed(t *testing.T) {
	s := newTestServer(t, 0)
	first := s.publish(t, schema.TypeGuarantee, 1, 0)
	var missed []schema.Position
	for i := 0; i < 5; i++ {
		missed = append(missed, s.publish(t, schema.TypeGuarantee, 1, 0))
	}
	c := connect(t, s, mint(t, 1, "admin"), "since="+first.String())
	live := s.publish(t, schema.TypeGuarantee, 1, 0)
	got := c.ids(6)
	for i, p := range append(missed, live) {
		if got[i] != p.String() {
			t.Fatalf("got %v, want %v then %v", got, missed, live)
		}
	}
	// An id older than history.
	c2 := connect(t, s, mint(t, 1, "admin"), "since=5-0")
	if m := c2.read(); m["type"] != "resync_required" {
		t.Errorf("got %v, want resync_required", m)
	}
}

func TestStalledClientIsClosedAsTooSlow(t *testing.T) {
	s := newTestServer(t, 64)
	stalled := connect(t, s, mint(t, 1, "admin"), "")
	healthy := connect(t, s, mint(t, 2, "admin"), "")
	_ = stalled // never reads again
	big := strings.Repeat("x", 32<<10)
	for i := 0; i < 400; i++ {
		s.seq++
		m := schema.Message{Pos: schema.Position{LSN: 5000 + s.seq}, Type: schema.TypeGuarantee, JSON: []byte(`{"id":"` + schema.Position{LSN: 5000 + s.seq}.String() + `","pad":"` + big + `"}`)}
		s.bus.Append(context.Background(), []schema.Message{m})
		healthy.read()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := stalled.conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != CloseTooSlow {
				t.Fatalf("stalled client: %v, want close 4008", err)
			}
			break
		}
	}
	if n := s.hub.dropped.Load(); n != 1 {
		t.Errorf("dropped = %d", n)
	}
}

func TestTokenRefreshAndExpiry(t *testing.T) {
	s := newTestServer(t, 0)
	short, _ := MintToken(secret, 5, "admin", nil, 2*time.Second)
	c := connect(t, s, short, "")
	c.send(`{"type":"auth","token":"` + mint(t, 5, "admin") + `"}`)
	if m := c.read(); m["type"] != "auth_ok" {
		t.Fatalf("got %v", m)
	}
	time.Sleep(3 * time.Second) // past the first token's expiry
	p := s.publish(t, schema.TypeGuarantee, 1, 0)
	if got := c.ids(1)[0]; got != p.String() {
		t.Errorf("refreshed connection got %s", got)
	}

	expiring, _ := MintToken(secret, 6, "admin", nil, time.Second)
	c2 := connect(t, s, expiring, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c2.conn.Read(ctx)
	if websocket.CloseStatus(err) != CloseTokenExpired {
		t.Errorf("unrefreshed connection: %v, want close 4001", err)
	}

	c3 := connect(t, s, mint(t, 7, "admin"), "")
	c3.send(`{"type":"auth","token":"` + mint(t, 8, "admin") + `"}`)
	c3.read() // error frame
	_, _, err = c3.conn.Read(context.Background())
	if websocket.CloseStatus(err) != CloseAuthChanged {
		t.Errorf("auth as another user: %v, want close 4003", err)
	}
}

func TestConnectionLimits(t *testing.T) {
	hub := NewHub(0)
	bus := NewMemoryBus(10, hub)
	v, _ := NewVerifier(AuthConfig{Secret: secret})
	srv := NewServer(ServerConfig{Hub: hub, History: bus, Verifier: v, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limits: Limits{MaxConnections: 3, MaxPerUser: 2, ConnectRate: 0.01, ConnectBurst: 5}})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	s := &testServer{url: hs.URL, bus: bus, hub: hub}
	dialCode := func(tok string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, strings.Replace(s.url, "http", "ws", 1)+"/ws?token="+tok, nil)
		if err == nil {
			t.Cleanup(func() { c.CloseNow() })
			return 101
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	u1 := mint(t, 1, "agent")
	if c := dialCode(u1); c != 101 {
		t.Fatalf("first: %d", c)
	}
	dialCode(u1)
	if c := dialCode(u1); c != 429 {
		t.Errorf("third connection of one user: %d, want 429", c)
	}
	dialCode(mint(t, 2, "agent"))
	if c := dialCode(mint(t, 3, "agent")); c != 503 {
		t.Errorf("connection over the total: %d, want 503", c)
	}
	if c := dialCode(mint(t, 4, "agent")); c != 429 {
		t.Errorf("connection over the IP's rate: %d, want 429", c)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHTTPServer(srv *Server) *httptest.Server { return httptest.NewServer(srv.Handler()) }

// A client that stops answering pings is dropped; one that reads (and so
// answers them) stays.
func TestUnansweredPingsDropTheConnection(t *testing.T) {
	hub := NewHub(0)
	bus := NewMemoryBus(10, hub)
	_, url := startServer(t, ServerConfig{Hub: hub, History: bus, PingInterval: 100 * time.Millisecond, PongTimeout: 200 * time.Millisecond})
	s := &testServer{url: url, bus: bus, hub: hub}
	live := connect(t, s, mint(t, 1, "admin"), "")
	go func() {
		for {
			if _, _, err := live.conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	_ = connect(t, s, mint(t, 2, "admin"), "") // reads nothing: never pongs
	eventually(5*time.Second, func() bool { return hub.Clients() == 1 })
	if n := hub.Clients(); n != 1 {
		t.Fatalf("%d clients after 5 s, want only the one answering pings", n)
	}
}

// A client that stops reading while traffic stops too (so it never falls
// out of the window) is closed by the write watchdog.
func TestHungWritesAreClosed(t *testing.T) {
	hub := NewHub(1 << 16)
	bus := NewMemoryBus(1<<16, hub)
	srv, url := startServer(t, ServerConfig{Hub: hub, History: bus, WriteTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Watch(ctx)
	s := &testServer{url: url, bus: bus, hub: hub}
	_ = connect(t, s, mint(t, 1, "admin"), "") // never reads again
	big := strings.Repeat("x", 256<<10)
	for i := 0; i < 64; i++ { // 16 MB: more than the socket buffers hold
		s.seq++
		pos := schema.Position{LSN: 9000 + s.seq}
		bus.Append(context.Background(), []schema.Message{{Pos: pos, Type: schema.TypeGuarantee, JSON: []byte(`"` + big + `"`)}})
	}
	eventually(5*time.Second, func() bool { return hub.Clients() == 0 })
	if n := hub.Clients(); n != 0 {
		t.Fatalf("%d clients still connected with a hung write", n)
	}
}

// An in-band resume never sends an id the connection already carried, and
// a resync says where the connection continues from.
func TestResumeNeverRepeatsOnAConnection(t *testing.T) {
	s := newTestServer(t, 0)
	c := connect(t, s, mint(t, 1, "admin"), "")
	var ps []schema.Position
	for i := 0; i < 4; i++ {
		ps = append(ps, s.publish(t, schema.TypeGuarantee, 1, 0))
	}
	c.ids(4)
	c.send(`{"type":"resume","since":"` + ps[0].String() + `"}`)
	next := s.publish(t, schema.TypeGuarantee, 1, 0)
	if got := c.ids(1)[0]; got != next.String() {
		t.Fatalf("after resuming from an id already passed, got %s, want %s (nothing repeated)", got, next)
	}
	c2 := connect(t, s, mint(t, 1, "admin"), "since=5-0")
	m := c2.read()
	if m["type"] != "resync_required" || m["position"] != next.String() {
		t.Errorf("got %v, want resync_required at %s", m, next)
	}
}

// A subscription given at connect narrows the replay too, and is
// validated like a subscribe frame.
func TestSubscriptionAtConnect(t *testing.T) {
	s := newTestServer(t, 0)
	first := s.publish(t, schema.TypeVoting, 4, 0)
	s.publish(t, schema.TypeGuarantee, 4, 0) // replayed? no: wrong type
	replayed := s.publish(t, schema.TypeVoting, 4, 0)
	c := connect(t, s, mint(t, 2, "supervisor", 3, 4), "types=voting_update&committees=4,9&since="+first.String())
	if got := c.ids(1)[0]; got != replayed.String() {
		t.Fatalf("replay gave %s, want %s", got, replayed)
	}
	s.publish(t, schema.TypeVoting, 3, 0) // committee not subscribed
	s.publish(t, schema.TypeVoting, 9, 0) // not in the token: never widened
	live := s.publish(t, schema.TypeVoting, 4, 0)
	if got := c.ids(1)[0]; got != live.String() {
		t.Errorf("live gave %s, want %s", got, live)
	}
	for _, q := range []string{"types=nope", "committees=x"} {
		_, resp, err := websocket.Dial(context.Background(), strings.Replace(s.url, "http", "ws", 1)+"/ws?token="+mint(t, 2, "admin")+"&"+q, nil)
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("%s: %v, want HTTP 400", q, err)
		}
	}
}
