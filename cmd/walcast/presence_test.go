package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/testenv"
)

// presenceView is a client's picture of who is online, built from
// presence_state and presence_diff frames as a browser would.
type presenceView struct {
	c      *wsClient
	users  map[int64][]string // user → viewing
	typing []string           // "user:target" of typing frames received
}

type presenceUser struct {
	UserID  int64    `json:"user_id"`
	Viewing []string `json:"viewing"`
}

func joinPresence(t *testing.T, c *wsClient, viewing string) *presenceView {
	t.Helper()
	frame := `{"type":"presence"}`
	if viewing != "" {
		frame = fmt.Sprintf(`{"type":"presence","viewing":%q}`, viewing)
	}
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	return &presenceView{c: c}
}

func (v *presenceView) String() string {
	var ids []int64
	for u := range v.users {
		ids = append(ids, u)
	}
	slices.Sort(ids)
	var parts []string
	for _, u := range ids {
		parts = append(parts, fmt.Sprintf("%d[%s]", u, strings.Join(v.users[u], ",")))
	}
	return strings.Join(parts, " ")
}

// wait applies frames until the view reads want, failing after timeout.
func (v *presenceView) wait(t *testing.T, want string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(timeout)
	for v.users == nil || v.String() != want {
		select {
		case b, ok := <-v.c.frames:
			if !ok {
				t.Fatalf("connection closed: %v", <-v.c.closed)
			}
			v.apply(t, b)
		case <-deadline:
			t.Fatalf("presence is %q after %v, want %q", v.String(), timeout, want)
		}
	}
	return time.Since(start)
}

func (v *presenceView) apply(t *testing.T, b []byte) {
	var f struct {
		Type         string
		Users, Joins []presenceUser
		Updates      []presenceUser
		Leaves       []int64
		UserID       int64 `json:"user_id"`
		Target       string
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	switch f.Type {
	case "presence_state":
		v.users = map[int64][]string{}
		for _, u := range f.Users {
			v.users[u.UserID] = u.Viewing
		}
	case "presence_diff":
		for _, u := range append(f.Joins, f.Updates...) {
			v.users[u.UserID] = u.Viewing
		}
		for _, u := range f.Leaves {
			delete(v.users, u)
		}
	case "typing":
		v.typing = append(v.typing, fmt.Sprintf("%d:%s", f.UserID, f.Target))
	}
}

// Presence and typing across two serve replicas sharing Redis: joins,
// changes and leaves on one replica reach the other; a replica killed
// with kill -9 loses its users everywhere within the TTL; typing reaches
// only the same scope, across replicas.
func TestPresenceAcrossReplicasSurvivesKill9(t *testing.T) {
	rd := testenv.StartRedis(t)
	a := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL(), "--presence-ttl", "3s"))
	b := startCommand(t, testenv.FreePort(t), "serve", "--redis-url", rd.URL(), "--jwt-secret", testSecret, "--presence-ttl", "3s")
	waitReady(t, a.addr)
	b.waitReady(t)

	u1 := joinPresence(t, dial(t, a.addr, token(t, 1, "", 1), ""), "dashboard")
	u1.wait(t, "1[dashboard]", 5*time.Second)
	other := joinPresence(t, dial(t, a.addr, token(t, 4, "", 2), ""), "")
	other.wait(t, "4[]", 5*time.Second)

	u2 := joinPresence(t, dial(t, b.addr, token(t, 2, "supervisor", 1), ""), "guarantee:7")
	took := u1.wait(t, "1[dashboard] 2[guarantee:7]", 5*time.Second)
	t.Logf("a join on replica B reached replica A in %v", took.Round(time.Millisecond))
	u2.wait(t, "1[dashboard] 2[guarantee:7]", 5*time.Second)

	// User 1 opens a second tab on replica B: still one user, viewing both.
	tab := dial(t, b.addr, token(t, 1, "", 1), "")
	joinPresence(t, tab, "guarantee:7")
	u2.wait(t, "1[dashboard,guarantee:7] 2[guarantee:7]", 5*time.Second)
	tab.conn.Close(websocket.StatusNormalClosure, "")
	u2.wait(t, "1[dashboard] 2[guarantee:7]", 5*time.Second)

	// Typing on B reaches user 1 on A (same committee), not user 4.
	for _, target := range []string{"guarantee:7"} {
		frame := fmt.Sprintf(`{"type":"typing","target":%q}`, target)
		if err := u2.c.conn.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(5 * time.Second)
	for len(u1.typing) == 0 {
		select {
		case fr := <-u1.c.frames:
			u1.apply(t, fr)
		case <-deadline:
			t.Fatal("typing on replica B did not reach replica A")
		}
	}
	if u1.typing[0] != "2:guarantee:7" {
		t.Fatalf("typing frames: %v", u1.typing)
	}

	// Replica B dies without a word: its user disappears from A within
	// the TTL (3 s here), well within 30 s.
	b.kill9(t)
	took = u1.wait(t, "1[dashboard]", 30*time.Second)
	t.Logf("users of a replica killed with kill -9 disappeared from the other after %v (TTL 3s)", took.Round(time.Millisecond))
	if took > 6*time.Second {
		t.Errorf("a killed replica's users disappeared after %v, want within TTL + TTL/3", took)
	}
	// User 4 (committee 2) saw nothing of committee 1: no diff, no typing.
	select {
	case fr := <-other.c.frames:
		t.Fatalf("user 4 (another committee) received %s", fr)
	case <-time.After(200 * time.Millisecond):
	}
}
