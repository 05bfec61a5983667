package broadcast

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walcast/walcast/schema"
)

// An attacker's connection holds a wide token, joins presence and
// subscribes, then refreshes to a token that drops the admin role and a
// committee (as the application does when a role is revoked). From
// auth_ok on, nothing of what was dropped reaches it, whatever the kind of
// frame, and others stop seeing it as a member of the dropped committee.
func TestAuthFrameNarrowsEveryFrameKind(t *testing.T) {
	s := newTestServer(t, 0)
	x, u1, u2 := joinWideAndTwoUsers(t, s)

	// The refresh: no admin role, committee 1 only. A fresh presence_state
	// replaces what x knew: user 2 is gone.
	x.reauth(mint(t, 5, "supervisor", 1))
	if got := viewString(x.view); got != "1:[a] 5:supervisor[secret]" {
		t.Fatalf("presence after the refresh: %s", got)
	}
	// Then the dashboards the new token allows, and only those.
	if got := x.tagsUntil("personal:5"); !slices.Equal(got, []string{"supervisor:1", "personal:5"}) {
		t.Fatalf("dashboards after the refresh: %v", got)
	}
	// What others see of x: user 2 (committee 2) no longer sees it, user 1
	// sees its new role.
	u2.waitView("2:[b]")
	u1.waitView("1:[a] 5:supervisor[secret]")

	checkDroppedScopePassesBy(t, s, x, u1, u2)
	checkResumeUnderTheNewToken(t, s, x)

	// Regaining committee 2 does not bring it back into the subscription:
	// the refresh narrowed it to committee 1, and a subscription never
	// widens. Presence follows the token: user 2 is visible again.
	x.reauth(mint(t, 5, "supervisor", 1, 2))
	if got := viewString(x.view); got != "1:[a] 2:[b2] 5:supervisor[secret]" {
		t.Fatalf("presence after regaining committee 2: %s", got)
	}
	if got := x.tagsUntil("personal:5"); !slices.Equal(got, []string{"supervisor:1", "personal:5"}) {
		t.Fatalf("dashboards with the subscription narrowed to committee 1: %v", got)
	}
	x.send(`{"type":"subscribe","types":null,"committees":[1,2]}`)
	var sub []byte
	for sub == nil {
		if f := x.next(); frameType(f) == "subscribed" {
			sub = f
		}
	}
	if !strings.Contains(string(sub), `"committees":[1,2]`) {
		t.Errorf("subscribing again under the new token: %s", sub)
	}
}

// joinWideAndTwoUsers publishes a dashboard of each kind and connects x
// (user 5, admin of committees 1 and 2, subscribed to both), u1
// (committee 1) and u2 (committee 2); all three join presence.
func joinWideAndTwoUsers(t *testing.T, s *testServer) (x, u1, u2 *probe) {
	t.Helper()
	for _, d := range []schema.Message{dashboard(schema.DashboardAdmin, 0), dashboard(schema.DashboardSupervisor, 1),
		dashboard(schema.DashboardSupervisor, 2), dashboard(schema.DashboardPersonal, 5), dashboard(schema.DashboardPersonal, 6)} {
		s.publishMsg(t, d, d.DashboardKey)
	}
	x = dialProbe(t, s.url, "x", mint(t, 5, "admin", 1, 2), "committees=1,2")
	if got := x.tagsUntil("personal:5"); !slices.Equal(got, []string{"admin", "supervisor:1", "supervisor:2", "personal:5"}) {
		t.Fatalf("dashboards at connect: %v", got)
	}
	u1 = dialProbe(t, s.url, "u1", mint(t, 1, "", 1), "")
	u2 = dialProbe(t, s.url, "u2", mint(t, 2, "", 2), "")
	u1.send(`{"type":"presence","viewing":"a"}`)
	u1.waitView("1:[a]")
	u2.send(`{"type":"presence","viewing":"b"}`)
	u2.waitView("2:[b]")
	x.send(`{"type":"presence","viewing":"secret"}`)
	x.waitView("1:[a] 2:[b] 5:admin[secret]")
	u1.waitView("1:[a] 5:admin[secret]")
	u2.waitView("2:[b] 5:admin[secret]")
	return x, u1, u2
}

// checkDroppedScopePassesBy checks that everything of committee 2 and of
// admins (presence, typing, rows, dashboards) passes x by, while
// committee 1's and election-wide traffic reaches it.
func checkDroppedScopePassesBy(t *testing.T, s *testServer, x, u1, u2 *probe) {
	t.Helper()
	u2.send(`{"type":"presence","viewing":"b2"}`)
	u2.send(`{"type":"typing","target":"guarantee:2"}`)
	u2.sync()
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Committee: 2, HasCommittee: true}, "committee 2")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, AdminOnly: true}, "admin only")
	s.publishMsg(t, dashboard(schema.DashboardAdmin, 0), "admin dashboard")
	s.publishMsg(t, dashboard(schema.DashboardSupervisor, 2), "supervisor:2 dashboard")
	s.publishMsg(t, dashboard(schema.DashboardPersonal, 6), "personal:6 dashboard")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Committee: 1, HasCommittee: true, Owner: 2, HasOwner: true}, "committee 1")
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "election-wide")
	u1.send(`{"type":"typing","target":"guarantee:1"}`)
	u1.sync()
	var got []string
	typed, marked := false, false
	for _, f := range x.until(func(f []byte) bool {
		typed = typed || frameType(f) == "typing"
		marked = marked || frameJSON(f)["tag"] == "election-wide"
		return typed && marked
	}) {
		m := frameJSON(f)
		switch frameType(f) {
		case "typing":
			if m["user_id"].(fmt.Stringer).String() != "1" {
				t.Errorf("x received %s after losing committee 2", f)
			}
		case "presence_diff":
			t.Errorf("x received %s: nothing it may see changed", f)
		default:
			if tag, ok := m["tag"].(string); ok {
				got = append(got, tag)
			} else {
				t.Errorf("x received %s", f)
			}
		}
	}
	if !slices.Equal(got, []string{"committee 1", "election-wide"}) {
		t.Errorf("x received %v after the refresh, want [committee 1 election-wide]", got)
	}
}

// checkResumeUnderTheNewToken checks that a resume reads history under
// the token in force too: the rows of committee 2 and admin-only rows it
// finds after the last id are not replayed.
func checkResumeUnderTheNewToken(t *testing.T, s *testServer, x *probe) {
	t.Helper()
	last := s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "before resume")
	x.tagsUntil("before resume")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Committee: 2, HasCommittee: true}, "committee 2 in history")
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, AdminOnly: true}, "admin only in history")
	x.send(`{"type":"resume","since":"` + last + `"}`)
	frames := x.sync()
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "after resume")
	frames = append(frames, x.until(func(f []byte) bool { return frameJSON(f)["tag"] == "after resume" })...)
	if got := tags(frames); !slices.Equal(got, []string{"after resume"}) {
		t.Errorf("resume after the refresh gave %v", got)
	}
}

// Frames computed under the old token and still queued (presence diffs,
// typing frames, messages in the window) when the auth frame is applied
// never follow auth_ok: the attacker stops reading while another
// committee's traffic piles up, then refreshes to a token without it.
func TestQueuedFramesDoNotLeakAfterAuthOK(t *testing.T) {
	s := newTestServer(t, 0)
	x := dialProbe(t, s.url, "x", mint(t, 5, "admin"), "")
	x.send(`{"type":"presence","viewing":"x"}`)
	x.waitView("5:admin[x]")
	// Eight users of committee 2 churn presence and type, while
	// committee 2 rows and admin-only rows are published.
	var others []*probe
	for i := range 8 {
		o := dialProbe(t, s.url, fmt.Sprint("o", i), mint(t, int64(100+i), "", 2), "")
		o.send(`{"type":"presence","viewing":"o"}`)
		others = append(others, o)
	}
	var mu sync.Mutex // serializes publishes
	stop := churnCommittee2(t, s, others, &mu)
	// x saw the others' traffic under its admin token...
	for n := 0; n < 50; {
		if f := x.next(); frameType(f) == "typing" || frameType(f) == "guarantee_update" {
			n++
		}
	}
	x.send(`{"type":"auth","token":"` + mint(t, 5, "", 1) + `"}`)
	for frameType(x.next()) != "auth_ok" {
	}
	after := 0
	check := func(f []byte) {
		after++
		switch frameType(f) {
		case "presence_state", "presence_diff":
			for _, id := range x.apply(f) {
				if id != 5 {
					t.Errorf("after auth_ok x was told about user %d of committee 2: %s", id, f)
				}
			}
		case "typing", "guarantee_update":
			t.Errorf("after auth_ok x received %s", f)
		}
	}
	// ...and nothing of it after auth_ok, while the traffic goes on.
	for range 10 {
		mu.Lock()
		s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "tick")
		mu.Unlock()
		for _, f := range x.until(func(f []byte) bool { return frameJSON(f)["tag"] == "tick" }) {
			check(f)
		}
	}
	stop()
	// A last barrier on the presence queue: x's own change comes after
	// anything queued for it before.
	x.send(`{"type":"presence","viewing":"end"}`)
	for _, f := range x.until(func(f []byte) bool {
		return frameType(f) == "presence_diff" && strings.Contains(string(f), `"end"`)
	}) {
		check(f)
	}
	if got := viewString(x.view); got != "5:[end]" {
		t.Errorf("x's presence after the refresh: %s, want only itself", got)
	}
	t.Logf("%d frames checked after auth_ok", after)
}

// churnCommittee2 has others change presence and type, and publishes
// committee 2 rows and admin-only rows (under mu), until stop is called;
// stop returns when they have stopped. The load is paced (a frame or two
// every 2 ms per sender) so that the test stays fast under -race on a
// shared machine.
func churnCommittee2(t *testing.T, s *testServer, others []*probe, mu *sync.Mutex) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	pace := time.NewTicker(2 * time.Millisecond)
	for i, o := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				case <-pace.C:
				}
				frame := fmt.Sprintf(`{"type":"presence","viewing":"v%d"}`, n)
				if n%2 == 1 {
					frame = fmt.Sprintf(`{"type":"typing","target":"t%d-%d"}`, i, n)
				}
				if o.conn.Write(t.Context(), 1, []byte(frame)) != nil {
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-pace.C:
			}
			mu.Lock()
			s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Committee: 2, HasCommittee: true}, "committee 2")
			s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, AdminOnly: true}, "admin only")
			mu.Unlock()
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		pace.Stop()
	}
}

// Auth frames back to back are limited: each one would cost a signature
// check, a presence_state, the dashboards again and a presence update on
// every replica. Beyond the burst the token in force stays.
func TestAuthFramesAreRateLimited(t *testing.T) {
	s := newTestServer(t, 0)
	x := dialProbe(t, s.url, "x", mint(t, 5, "", 1), "")
	tokens := []string{mint(t, 5, "", 1, 2), mint(t, 5, "", 1)}
	var codes []string
	lastOK := -1
	for i := range 8 {
		x.send(`{"type":"auth","token":"` + tokens[i%2] + `"}`)
		f := x.next()
		code := frameType(f)
		if code == "error" {
			code = frameJSON(f)["code"].(string)
		}
		if code == "auth_ok" {
			lastOK = i
		}
		codes = append(codes, code)
	}
	limited := strings.Count(strings.Join(codes, " "), "rate_limited")
	t.Logf("eight auth frames back to back: %v", codes)
	if !slices.Equal(codes[:3], []string{"auth_ok", "auth_ok", "auth_ok"}) || limited < 4 {
		t.Fatalf("eight auth frames back to back: %v, want a burst of 3 then mostly rate_limited", codes)
	}
	// The last token accepted is in force, not the last one sent.
	s.publishMsg(t, schema.Message{Type: schema.TypeGuarantee, Committee: 2, HasCommittee: true}, "committee 2")
	s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, "end")
	want := []string{"end"}
	if lastOK%2 == 0 {
		want = []string{"committee 2", "end"}
	}
	if got := tags(x.until(func(f []byte) bool { return frameJSON(f)["tag"] == "end" })); !slices.Equal(got, want) {
		t.Errorf("after the limited frames x received %v, want %v (token %d in force)", got, want, lastOK)
	}
}
