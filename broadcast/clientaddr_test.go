package broadcast

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestAddrKeyGroupsIPv6By64AndUnmapsIPv4(t *testing.T) {
	key := func(s string) netip.Prefix { return addrKey(netip.MustParseAddr(s)) }
	same := [][2]string{
		{"198.51.100.7", "::ffff:198.51.100.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"2001:db8:1:2::1", "2001:db8:1:2:abcd::9"},
		{"fe80::1%eth0", "fe80::2"},
	}
	for _, p := range same {
		if key(p[0]) != key(p[1]) {
			t.Errorf("%s and %s have keys %v and %v, want one", p[0], p[1], key(p[0]), key(p[1]))
		}
	}
	differ := [][2]string{
		{"198.51.100.7", "198.51.100.8"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"::ffff:198.51.100.7", "::198.51.100.7"},
	}
	for _, p := range differ {
		if key(p[0]) == key(p[1]) {
			t.Errorf("%s and %s share key %v", p[0], p[1], key(p[0]))
		}
	}
	if k := key("2001:db8:1:2:3:4:5:6"); k.String() != "2001:db8:1:2::/64" {
		t.Errorf("key %v, want 2001:db8:1:2::/64", k)
	}
}

func TestClientAddrReadsForwardedForOnlyFromTrustedProxies(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		peer, xff, want string
	}{
		{"203.0.113.5:4000", "198.51.100.1", "203.0.113.5"},                 // untrusted peer: header ignored
		{"10.1.2.3:4000", "", "10.1.2.3"},                                   // trusted, no header
		{"10.1.2.3:4000", "198.51.100.1", "198.51.100.1"},                   // one proxy
		{"10.1.2.3:4000", "6.6.6.6, 198.51.100.1", "198.51.100.1"},          // client-written entry left of the real one
		{"10.1.2.3:4000", "198.51.100.1, 192.0.2.7", "198.51.100.1"},        // two proxies
		{"192.0.2.7:4000", "2001:db8::9, fd00::1, 10.9.9.9", "2001:db8::9"}, // a chain of trusted hops
		{"[::ffff:10.1.2.3]:4000", "[2001:db8::5]:1234", "2001:db8::5"},     // mapped peer, bracketed entry with port
		{"10.1.2.3:4000", "198.51.100.1:5555", "198.51.100.1"},              // entry with a port
		{"10.1.2.3:4000", "::ffff:198.51.100.1", "198.51.100.1"},            // mapped entry
		{"10.1.2.3:4000", "6.6.6.6, unknown, 192.0.2.7", "192.0.2.7"},       // garbage stops at the trusted hop
		{"10.1.2.3:4000", "10.5.5.5, 10.6.6.6", "10.5.5.5"},                 // all trusted: leftmost
		{"[fd00::1]:80", "198.51.100.1,198.51.100.2 , ", "198.51.100.2"},    // spacing and empty entries
		{"203.0.113.5:4000", "10.0.0.1", "203.0.113.5"},                     // untrusted peer naming a trusted one
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		got, _ := clientAddr(r, trusted)
		if got.String() != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %v, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
	// Several header lines are one list, in order.
	r := httptest.NewRequest("GET", "/ws", nil)
	r.RemoteAddr = "10.1.2.3:4000"
	r.Header.Add("X-Forwarded-For", "6.6.6.6")
	r.Header.Add("X-Forwarded-For", "198.51.100.1, 10.0.0.9")
	if got, _ := clientAddr(r, trusted); got.String() != "198.51.100.1" {
		t.Errorf("two header lines: client %v, want 198.51.100.1", got)
	}
	// Forwarded is never read.
	r = httptest.NewRequest("GET", "/ws", nil)
	r.RemoteAddr = "10.1.2.3:4000"
	r.Header.Set("Forwarded", "for=198.51.100.1")
	if got, _ := clientAddr(r, trusted); got.String() != "10.1.2.3" {
		t.Errorf("Forwarded: client %v, want the peer", got)
	}
}

func TestParseTrustedProxiesRefusesNonsense(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "proxy.example.com", "10.0.0.1/8/8", "::ffff:10.0.0.0/90"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	p, err := ParseTrustedProxies("::ffff:10.0.0.0/104")
	if err != nil || len(p) != 1 || p[0].String() != "10.0.0.0/8" {
		t.Errorf("mapped prefix: %v %v, want 10.0.0.0/8", p, err)
	}
}

// The limiter's table is bounded, and a flood of new keys never resets a
// bucket that is not full: an address that used its burst stays limited.
func TestRateLimiterTableIsBoundedWithoutResets(t *testing.T) {
	r := newRateLimiter(1, 2, 100)
	now := time.Unix(1e9, 0)
	victim := addrKey(netip.MustParseAddr("198.51.100.1"))
	for r.allow(victim, now) {
	}
	for i := range 10000 {
		now = now.Add(100 * time.Microsecond)
		r.allow(addrKey(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})), now)
		if n := r.tracked(); n > 100 {
			t.Fatalf("%d keys tracked after %d new ones, want at most 100", n, i+1)
		}
	}
	// One second has passed: the victim has one token back, not a burst.
	if !r.allow(victim, now) {
		t.Errorf("victim got no token back after a second")
	}
	if r.allow(victim, now) {
		t.Errorf("victim's bucket was reset by the flood")
	}
	// Once buckets refill, the table makes room for new keys again.
	now = now.Add(10 * time.Second)
	newcomer := addrKey(netip.MustParseAddr("203.0.113.9"))
	r.allow(newcomer, now)
	r.mu.Lock()
	_, own := r.buckets[newcomer]
	r.mu.Unlock()
	if !own {
		t.Errorf("a newcomer after the flood has no bucket of its own")
	}
}

// Through a trusted proxy, over real HTTP: addresses rotating inside one
// /64 share a bucket, and a flood of distinct /64s neither grows the table
// past its cap nor frees an address that is rate-limited.
func TestConnectLimiterBehindProxyOverHTTP(t *testing.T) {
	hub := NewHub(0)
	bus := NewMemoryBus(10, hub)
	v, _ := NewVerifier(AuthConfig{Secret: secret})
	trusted, _ := ParseTrustedProxies("127.0.0.1")
	srv := NewServer(ServerConfig{Hub: hub, History: bus, Verifier: v, Logger: discard(), TrustedProxies: trusted,
		Limits: Limits{ConnectRate: 0.01, ConnectBurst: 2, MaxTrackedAddrs: 200}})
	hs := newHTTPServer(srv)
	defer hs.Close()
	get := func(xff string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", hs.URL+"/ws", nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// No token: 401 means the limiter let the request through.
	for i, xff := range []string{"2001:db8:7:7::1", "2001:db8:7:7:ffff::2"} {
		if c := get(xff); c != http.StatusUnauthorized {
			t.Fatalf("request %d from the /64: %d, want 401", i+1, c)
		}
	}
	if c := get("2001:db8:7:7:1:2:3:4"); c != http.StatusTooManyRequests {
		t.Errorf("third address in the same /64: %d, want 429", c)
	}
	if c := get("2001:db8:7:8::1"); c != http.StatusUnauthorized {
		t.Errorf("another /64: %d, want 401", c)
	}
	for i := range 2000 {
		get(fmt.Sprintf("2001:db8:%x:%x::1", 100+i/256, i%256))
	}
	if n := srv.limiter.tracked(); n > 200 {
		t.Errorf("%d addresses tracked, want at most 200", n)
	}
	if c := get("2001:db8:7:7::99"); c != http.StatusTooManyRequests {
		t.Errorf("the limited /64 after a flood of new ones: %d, want still 429", c)
	}
}
