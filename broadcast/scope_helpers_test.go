package broadcast

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// probe is a real WebSocket client that reads every frame in the
// background, as a browser would, so a test can wait for one frame
// without closing the connection on a timeout.
type probe struct {
	t      testing.TB
	name   string
	conn   *websocket.Conn
	frames chan []byte
	closed chan error

	// view is the presence list built from presence_state and
	// presence_diff frames: user → role and viewing.
	view map[int64]string
}

// dialProbe connects with tok and query and waits for the welcome.
func dialProbe(t testing.TB, url, name, tok, query string) *probe {
	t.Helper()
	conn, err := dialWS(t, url, tok, query)
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	p := &probe{t: t, name: name, conn: conn, frames: make(chan []byte, 4096), closed: make(chan error, 1)}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				p.closed <- err
				close(p.frames)
				return
			}
			select {
			case p.frames <- b:
			case <-done: // the test is over; nobody reads any more
				return
			}
		}
	}()
	t.Cleanup(func() { close(done); conn.CloseNow(); wg.Wait() })
	if f := p.next(); frameType(f) != "welcome" {
		t.Fatalf("%s: first frame %s, want welcome", name, f)
	}
	return p
}

// next returns the next frame, failing after a generous liveness limit.
func (p *probe) next() []byte {
	p.t.Helper()
	select {
	case b, ok := <-p.frames:
		if !ok {
			p.t.Fatalf("%s: connection closed: %v", p.name, <-p.closed)
		}
		return b
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s: no frame within 10 s", p.name)
	}
	return nil
}

func (p *probe) send(frame string) {
	p.t.Helper()
	if err := p.conn.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		p.t.Fatalf("%s: write: %v", p.name, err)
	}
}

// sync sends a ping and returns the frames received before its pong: the
// server's reader has handled every frame sent before it.
func (p *probe) sync() [][]byte {
	p.t.Helper()
	p.send(`{"type":"ping"}`)
	var out [][]byte
	for {
		f := p.next()
		if frameType(f) == "pong" {
			return out
		}
		out = append(out, f)
	}
}

// until returns the frames received up to and including the first that
// stop accepts.
func (p *probe) until(stop func([]byte) bool) [][]byte {
	p.t.Helper()
	var out [][]byte
	for {
		f := p.next()
		out = append(out, f)
		if stop(f) {
			return out
		}
	}
}

// tagsUntil returns the tags of the frames up to the one tagged last.
func (p *probe) tagsUntil(last string) []string {
	p.t.Helper()
	return tags(p.until(func(f []byte) bool { return frameJSON(f)["tag"] == last }))
}

// reauth sends an auth frame with tok and reads auth_ok, then the
// presence_state that follows it, which it applies to p.view.
func (p *probe) reauth(tok string) {
	p.t.Helper()
	p.send(`{"type":"auth","token":"` + tok + `"}`)
	if f := p.next(); frameType(f) != "auth_ok" {
		p.t.Fatalf("%s: got %s, want auth_ok", p.name, f)
	}
	if f := p.next(); frameType(f) != "presence_state" {
		p.t.Fatalf("%s: after auth_ok got %s, want presence_state", p.name, f)
	} else {
		p.apply(f)
	}
}

// frameJSON decodes a frame keeping numbers exact.
func frameJSON(b []byte) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		panic(fmt.Sprintf("frame %s: %v", b, err))
	}
	return m
}

func frameType(b []byte) string {
	t, _ := frameJSON(b)["type"].(string)
	return t
}

// presenceUser is one user of a presence frame, its id kept exact.
type presenceUserJSON struct {
	UserID  json.Number `json:"user_id"`
	Role    string      `json:"role"`
	Viewing []string    `json:"viewing"`
}

// apply updates the probe's presence view from a presence frame and
// returns the users it listed as joining or updated (their ids).
func (p *probe) apply(b []byte) []int64 {
	var f struct {
		Type                  string
		Users, Joins, Updates []presenceUserJSON
		Leaves                []json.Number
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		p.t.Fatalf("%s: frame %s: %v", p.name, b, err)
	}
	var listed []int64
	put := func(us []presenceUserJSON) {
		for _, u := range us {
			id := mustID(p.t, u.UserID)
			listed = append(listed, id)
			p.view[id] = u.Role + "[" + strings.Join(u.Viewing, ",") + "]"
		}
	}
	switch f.Type {
	case "presence_state":
		p.view = map[int64]string{}
		put(f.Users)
	case "presence_diff":
		if p.view == nil {
			p.t.Fatalf("%s: presence_diff before presence_state: %s", p.name, b)
		}
		put(f.Joins)
		put(f.Updates)
		for _, l := range f.Leaves {
			delete(p.view, mustID(p.t, l))
		}
	}
	return listed
}

func mustID(t testing.TB, n json.Number) int64 {
	t.Helper()
	id, err := n.Int64()
	if err != nil || n.String() != fmt.Sprint(id) {
		t.Fatalf("user id %s is not an exact integer", n)
	}
	return id
}

// viewString renders a presence view as "1:role[a,b] 2:[]" in id order.
func viewString(v map[int64]string) string {
	ids := make([]int64, 0, len(v))
	for id := range v {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%d:%s", id, v[id]))
	}
	return strings.Join(parts, " ")
}

// waitView applies frames until the presence view reads want, returning
// every frame received meanwhile.
func (p *probe) waitView(want string) [][]byte {
	p.t.Helper()
	var out [][]byte
	deadline := time.After(10 * time.Second)
	for p.view == nil || viewString(p.view) != want {
		select {
		case b, ok := <-p.frames:
			if !ok {
				p.t.Fatalf("%s: connection closed: %v", p.name, <-p.closed)
			}
			out = append(out, b)
			p.apply(b)
		case <-deadline:
			p.t.Fatalf("%s: presence %q after 10 s, want %q", p.name, viewString(p.view), want)
		}
	}
	return out
}

// publishMsg stores m (Pos and JSON filled in) and returns its id. The
// frame carries a "tag" so a test can tell what arrived.
func (s *testServer) publishMsg(t testing.TB, m schema.Message, tag string) string {
	t.Helper()
	s.seq++
	m.Pos = schema.Position{LSN: 1000 + s.seq}
	m.JSON = []byte(fmt.Sprintf(`{"id":%q,"type":%q,"tag":%q}`, m.Pos, m.Type, tag))
	if err := s.bus.Append(context.Background(), []schema.Message{m}); err != nil {
		t.Fatal(err)
	}
	return m.Pos.String()
}

// dashboard returns a dashboard_update message of one kind.
func dashboard(kind string, id int64) schema.Message {
	m := schema.Message{Type: schema.TypeDashboard, DashboardKey: schema.DashboardKey(kind, id)}
	switch kind {
	case schema.DashboardAdmin:
		m.AdminOnly = true
	case schema.DashboardSupervisor:
		m.Committee, m.HasCommittee = id, true
	case schema.DashboardPersonal:
		m.Owner, m.HasOwner = id, true
	}
	return m
}

// tags returns the tags of the message frames among frames.
func tags(frames [][]byte) []string {
	var out []string
	for _, f := range frames {
		if tag, ok := frameJSON(f)["tag"].(string); ok {
			out = append(out, tag)
		}
	}
	return out
}
