package broadcast

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/walcast/walcast/schema"
)

// Ids above 2^53 that float64 would round into each other.
const (
	bigA = int64(1)<<53 + 1 // 9007199254740993
	bigB = int64(1) << 53   // 9007199254740992, what bigA rounds to as a float64
)

// Claims are read as exact 64-bit integers: user 2^53+1 is not user 2^53,
// and an id that is not an exact integer is refused, never rounded.
func TestIDClaimsAreExact(t *testing.T) {
	v, _ := NewVerifier(AuthConfig{Secret: secret})
	exp := time.Now().Add(time.Hour).Unix()
	p, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"user_id": bigA, "committees": []any{bigA, json.Number("9223372036854775807"), "-3"}, "exp": exp}))
	if err != nil {
		t.Fatal(err)
	}
	if p.UserID != bigA || !p.Committees[bigA] || p.Committees[bigB] || !p.Committees[1<<63-1] || !p.Committees[-3] {
		t.Errorf("principal = %+v, want user %d and committees %d, 2^63-1, -3 exactly", p, bigA, bigA)
	}
	p, err = v.Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "9007199254740993", "exp": exp}))
	if err != nil || p.UserID != bigA {
		t.Errorf("sub as a string: %+v, %v", p, err)
	}
	for name, id := range map[string]any{
		"fraction":            json.Number("1.5"),
		"exponent":            json.Number("1e3"),
		"2^53+1 as a float":   json.Number("9007199254740993.0"),
		"2^53+1 as exponent":  json.Number("9.007199254740993e15"),
		"beyond int64":        json.Number("9223372036854775808"),
		"below int64":         json.Number("-9223372036854775809"),
		"text":                "abc",
		"number text with .0": "12.0",
		"bool":                true,
		"null":                nil,
		"list":                []any{1},
	} {
		for _, claim := range []string{"user_id", "sub", "committees"} {
			c := jwt.MapClaims{"user_id": 1, "exp": exp}
			if claim == "committees" {
				c[claim] = []any{id}
			} else {
				delete(c, "user_id")
				c[claim] = id
			}
			_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c))
			if ae, ok := err.(*AuthError); !ok || ae.Reason != "claims" {
				t.Errorf("%s %s: %v, want refused (claims)", claim, name, err)
			}
		}
	}
}

// A token that names no user is refused: the per-user connection cap
// would not apply to it.
func TestTokenWithoutUserIsRefused(t *testing.T) {
	s := newTestServer(t, 0)
	exp := time.Now().Add(time.Hour).Unix()
	for name, claims := range map[string]jwt.MapClaims{
		"admin without a user":      {"role": "admin", "exp": exp, "token_type": "access"},
		"committees without a user": {"committees": []int{1, 2}, "exp": exp},
	} {
		tok := sign(t, jwt.SigningMethodHS256, secret, claims)
		for range 3 { // every attempt, not only past a cap
			_, resp, err := websocket.Dial(context.Background(), strings.Replace(s.url, "http", "ws", 1)+"/ws?token="+tok, nil)
			if err == nil || resp == nil || resp.StatusCode != 401 {
				t.Fatalf("%s: %v, want HTTP 401", name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(b), "names no user") {
				t.Errorf("%s: body %q", name, b)
			}
		}
		// Nor can an auth frame bring such a token onto an open connection.
		c := dialProbe(t, s.url, name, mint(t, 1, "admin"), "")
		c.send(`{"type":"auth","token":"` + tok + `"}`)
		if f := c.next(); frameType(f) != "error" || !strings.Contains(string(f), "claims") {
			t.Errorf("%s as an auth frame: %s, want auth_failed (claims)", name, f)
		}
	}
}

// Over real WebSockets, user 2^53+1 and user 2^53 (and committees of
// those ids) are two people: each gets its own rows, committee and
// personal dashboard only; presence and typing carry the exact ids; bad ids
// get 401.
func TestIDsAboveTwoToThe53AreExactEndToEnd(t *testing.T) {
	s := newTestServer(t, 0)
	for _, d := range []schema.Message{dashboard(schema.DashboardPersonal, bigA), dashboard(schema.DashboardPersonal, bigB),
		dashboard(schema.DashboardSupervisor, bigA), dashboard(schema.DashboardSupervisor, bigB)} {
		s.publishMsg(t, d, d.DashboardKey)
	}
	a := dialProbe(t, s.url, "a", mint(t, bigA, "", bigA), "")
	b := dialProbe(t, s.url, "b", mint(t, bigB, "", bigB), "")
	admin := dialProbe(t, s.url, "admin", mint(t, 1, "admin"), "")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Owner: bigA, HasOwner: true}, "row of A")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Owner: bigB, HasOwner: true}, "row of B")
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting, Committee: bigA, HasCommittee: true}, "committee A")
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting, Committee: bigB, HasCommittee: true}, "committee B")
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "end")
	end := func(f []byte) bool { return frameJSON(f)["tag"] == "end" }
	if got := strings.Join(tags(a.until(end)), "|"); got != "supervisor:9007199254740993|personal:9007199254740993|row of A|committee A|end" {
		t.Errorf("user 2^53+1 received %s", got)
	}
	if got := strings.Join(tags(b.until(end)), "|"); got != "supervisor:9007199254740992|personal:9007199254740992|row of B|committee B|end" {
		t.Errorf("user 2^53 received %s", got)
	}

	for _, p := range []*probe{a, b, admin} {
		p.send(`{"type":"presence","viewing":"` + p.name + `"}`)
	}
	a.waitView("9007199254740993:[a]")
	b.waitView("9007199254740992:[b]")
	admin.waitView("1:admin[admin] 9007199254740992:[b] 9007199254740993:[a]")
	a.send(`{"type":"typing","target":"x"}`)
	a.sync()
	for {
		f := admin.next()
		if frameType(f) == "typing" {
			if !strings.Contains(string(f), `"user_id":9007199254740993,`) {
				t.Errorf("typing frame %s, want user_id 9007199254740993", f)
			}
			break
		}
	}
	// b (the neighbouring id) saw nothing of a: a last change of its own
	// is the barrier on its queue.
	b.send(`{"type":"presence","viewing":"b2"}`)
	for _, f := range b.waitView("9007199254740992:[b2]") {
		if frameType(f) == "typing" || strings.Contains(string(f), "9007199254740993") {
			t.Errorf("user 2^53 received %s", f)
		}
	}
}
