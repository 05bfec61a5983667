package broadcast

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// presenceUsers renders a presence user list as "1[guarantee:7] 2[]".
func presenceUsers(v any) string {
	var parts []string
	list, _ := v.([]any)
	for _, u := range list {
		m := u.(map[string]any)
		var viewing []string
		for _, w := range m["viewing"].([]any) {
			viewing = append(viewing, w.(string))
		}
		parts = append(parts, fmt.Sprintf("%v[%s]", m["user_id"], strings.Join(viewing, ",")))
	}
	return strings.Join(parts, " ")
}

func leaves(v any) string {
	var parts []string
	for _, u := range v.([]any) {
		parts = append(parts, fmt.Sprint(u))
	}
	return strings.Join(parts, " ")
}

// expect reads the next frame and checks its type.
func (c *wsc) expect(typ string) map[string]any {
	c.t.Helper()
	m := c.read()
	if m["type"] != typ {
		c.t.Fatalf("got %v, want a %s frame", m, typ)
	}
	return m
}

// quiet fails if a frame arrives within d.
func (c *wsc) quiet(d time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, b, err := c.conn.Read(ctx); err == nil {
		c.t.Fatalf("unexpected frame: %s", b)
	}
}

// Presence: who is online, scoped like messages; several tabs count once;
// a diff on every join, leave and change of what someone views.
func TestPresenceStateDiffsAndScope(t *testing.T) {
	s := newTestServer(t, 0)
	a := connect(t, s, mint(t, 1, "", 1), "")
	b := connect(t, s, mint(t, 2, "supervisor", 1), "")
	c := connect(t, s, mint(t, 3, "", 2), "")
	admin := connect(t, s, mint(t, 9, "admin"), "")

	a.send(`{"type":"presence","viewing":"guarantee:7"}`)
	if got := presenceUsers(a.expect("presence_state")["users"]); got != "1[guarantee:7]" {
		t.Fatalf("a's state: %s", got)
	}
	b.send(`{"type":"presence"}`)
	if got := presenceUsers(b.expect("presence_state")["users"]); got != "1[guarantee:7] 2[]" {
		t.Fatalf("b's state: %s", got)
	}
	if d := a.expect("presence_diff"); presenceUsers(d["joins"]) != "2[]" {
		t.Fatalf("a's diff: %v", d)
	}
	c.send(`{"type":"presence","viewing":"guarantee:99"}`)
	if got := presenceUsers(c.expect("presence_state")["users"]); got != "3[guarantee:99]" {
		t.Fatalf("c (another committee) sees %s", got)
	}
	admin.send(`{"type":"presence"}`)
	if got := presenceUsers(admin.expect("presence_state")["users"]); got != "1[guarantee:7] 2[] 3[guarantee:99] 9[]" {
		t.Fatalf("admin sees %s", got)
	}

	// A second tab of user 1: one user, viewing both.
	a2 := connect(t, s, mint(t, 1, "", 1), "")
	a2.send(`{"type":"presence","viewing":"guarantee:8"}`)
	if got := presenceUsers(a2.expect("presence_state")["users"]); got != "1[guarantee:7,guarantee:8] 2[]" {
		t.Fatalf("a2's state: %s", got)
	}
	for _, cl := range []*wsc{a, b, admin} {
		if d := cl.expect("presence_diff"); presenceUsers(d["updates"]) != "1[guarantee:7,guarantee:8]" || presenceUsers(d["joins"]) != "" {
			t.Fatalf("diff after a second tab: %v", d)
		}
	}
	a2.conn.Close(1000, "")
	if d := b.expect("presence_diff"); presenceUsers(d["updates"]) != "1[guarantee:7]" || leaves(d["leaves"]) != "" {
		t.Fatalf("diff after the second tab closed: %v (user 1 is still online)", d)
	}
	a.expect("presence_diff")
	admin.expect("presence_diff")
	a.conn.Close(1000, "")
	if d := b.expect("presence_diff"); leaves(d["leaves"]) != "1" {
		t.Fatalf("diff after user 1 left: %v", d)
	}
	admin.expect("presence_diff")
	c.quiet(200 * time.Millisecond) // nothing of committee 1 reached committee 2
}

// Typing indicators reach the connections that may see the sender, not
// the sender, not other committees; they are rate-limited.
func TestTypingReachesOnlyTheSameScope(t *testing.T) {
	s := newTestServer(t, 0)
	a := connect(t, s, mint(t, 1, "", 1, 4), "")
	b := connect(t, s, mint(t, 2, "", 4), "")
	c := connect(t, s, mint(t, 3, "", 2), "")
	admin := connect(t, s, mint(t, 9, "admin"), "")
	for _, cl := range []*wsc{a, b, c, admin} {
		cl.send(`{"type":"presence"}`)
		cl.expect("presence_state")
	}
	a.expect("presence_diff") // b joined; c and the admin are not visible to a

	a.send(`{"type":"typing","target":"guarantee:7"}`)
	for _, cl := range []*wsc{b, admin} {
		m := cl.expect("typing")
		if m["user_id"] != float64(1) || m["target"] != "guarantee:7" {
			t.Fatalf("typing frame %v", m)
		}
	}
	// (quiet ends a connection: coder/websocket closes on a cancelled
	// read, so it comes last.)
	defer c.quiet(200 * time.Millisecond)

	// A burst of typing frames is cut down to the rate limit.
	for range 20 {
		a.send(`{"type":"typing","target":"guarantee:7"}`)
	}
	got := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, fr, err := b.conn.Read(ctx)
		cancel()
		if err != nil {
			break
		}
		var m map[string]any
		_ = json.Unmarshal(fr, &m)
		if m["type"] == "typing" {
			got++
		}
	}
	if got < 1 || got > 3 {
		t.Fatalf("20 typing frames in a burst relayed %d times, want the rate limit (about 2)", got)
	}

	// b's reads above timed out, which closes it: a hears b leave, and
	// never its own typing.
	if d := a.expect("presence_diff"); leaves(d["leaves"]) != "2" {
		t.Fatalf("a got %v, want b's leave (and no typing of its own)", d)
	}

	c.send(`{"type":"typing"}`)
	if m := c.expect("error"); m["code"] != "bad_typing" {
		t.Fatalf("typing without a target: %v", m)
	}
	c.send(`{"type":"presence","viewing":"` + strings.Repeat("x", MaxPresenceText+1) + `"}`)
	if m := c.expect("error"); m["code"] != "bad_presence" {
		t.Fatalf("overlong viewing: %v", m)
	}
}

func TestPresenceVisibility(t *testing.T) {
	e := &presenceEntry{UserID: 5, Committees: []int64{2, 3}}
	for _, c := range []struct {
		p    *Principal
		want bool
	}{
		{&Principal{Role: RoleAdmin}, true},
		{&Principal{UserID: 5, HasUser: true}, true},
		{&Principal{UserID: 6, HasUser: true, Committees: map[int64]bool{3: true}}, true},
		{&Principal{UserID: 6, HasUser: true, Committees: map[int64]bool{1: true}}, false},
		{&Principal{Role: RoleSupervisor, Committees: map[int64]bool{}}, false},
	} {
		if got := e.visibleTo(c.p); got != c.want {
			t.Errorf("visibleTo(%+v) = %v, want %v", c.p, got, c.want)
		}
	}
	if r := strongerRole("", "supervisor"); r != "supervisor" {
		t.Errorf("strongerRole = %q", r)
	}
	en := &presenceEntry{Viewing: []string{"b", "a", "b"}, Committees: []int64{3, 1, 3}}
	en.normalize()
	if !slices.Equal(en.Viewing, []string{"a", "b"}) || !slices.Equal(en.Committees, []int64{1, 3}) {
		t.Errorf("normalize: %+v", en)
	}
}
