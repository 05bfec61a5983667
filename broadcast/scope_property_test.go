package broadcast

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/schema"
)

// The property: whatever the tokens (roles, committees, users, ids above
// 2^53), subscriptions, in-band auth changes and messages (election-wide,
// committee, owner, unreadable scope, dashboards of each kind), every
// connection receives exactly the messages, presence entries and typing
// frames its current token allows. Real WebSocket clients against a real
// server; the expectations come from a model written from the protocol
// document, not from the server's code.
func TestScopeProperty(t *testing.T) {
	// Fixed seeds reproduce; the last one differs on every run and is
	// logged, so a failure it finds can be replayed.
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, uint64(time.Now().UnixNano())}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			runScopeScenario(t, seed, 60)
		})
	}
}

var (
	propUsers      = []int64{1, 2, bigB, bigA, 1<<63 - 1}
	propCommittees = []int64{1, 2, bigB, bigA}
	propRoles      = []string{"", "agent", "supervisor", "admin"}
	propTypes      = []string{schema.TypeGuarantee, schema.TypeAttendance, schema.TypeVoting}
)

// modelToken is what a token says.
type modelToken struct {
	user       int64
	role       string
	committees []int64
}

func (k modelToken) has(c int64) bool { return slices.Contains(k.committees, c) }

// mayReceive is the protocol's delivery rule for messages.
func (k modelToken) mayReceive(m schema.Message) bool {
	switch {
	case m.Type == schema.TypeDashboard && m.HasOwner: // personal: its owner only
		return m.Owner == k.user
	case k.role == RoleAdmin:
		return true
	case m.AdminOnly:
		return false
	case !m.HasCommittee && !m.HasOwner:
		return true
	}
	return (m.HasCommittee && k.has(m.Committee)) || (m.HasOwner && m.Owner == k.user)
}

// seesUser is the protocol's rule for presence and typing.
func (k modelToken) seesUser(user int64, committees []int64) bool {
	if k.role == RoleAdmin || k.user == user {
		return true
	}
	for _, c := range committees {
		if k.has(c) {
			return true
		}
	}
	return false
}

// modelSub is a subscription as the server should hold it: nil = all.
type modelSub struct {
	types      []string
	committees []int64 // narrowed to the token
	all        bool    // committees nil
}

func (s modelSub) allows(m schema.Message) bool {
	if s.types != nil && !slices.Contains(s.types, m.Type) {
		return false
	}
	return s.all || !m.HasCommittee || slices.Contains(s.committees, m.Committee)
}

type modelConn struct {
	p       *probe
	tok     modelToken
	sub     modelSub
	viewing string
	typed   int // typing frames sent (the limit allows a burst of 2)
	moved   int // presence changes sent
	auths   int // auth frames sent
	typing  map[string]bool
}

func randomToken(r *rand.Rand, user int64) modelToken {
	k := modelToken{user: user, role: propRoles[r.IntN(len(propRoles))]}
	for _, c := range propCommittees {
		if r.IntN(3) == 0 {
			k.committees = append(k.committees, c)
		}
	}
	return k
}

func (k modelToken) mint(t *testing.T) string {
	return mint(t, k.user, k.role, k.committees...)
}

func runScopeScenario(t *testing.T, seed uint64, steps int) {
	sc := &scenario{
		t:          t,
		r:          rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dash:       map[string]string{},
		dashMsgs:   map[string]schema.Message{},
		sentTyping: map[string]map[*modelConn]bool{},
	}
	t.Logf("seed %d", seed)
	sc.s = newTestServer(t, 0)
	sc.connect(6)
	defer func() {
		t.Logf("%d message deliveries checked, %d auth changes, %d presence changes, %d typing frames", sc.checked, sc.auths, sc.moves, sc.typings)
	}()
	for step := range steps {
		switch op := sc.r.IntN(10); {
		case op < 5:
			sc.publishStep(step)
		case op < 7:
			sc.authStep(step)
		case op < 8:
			sc.presenceStep(step)
		default:
			sc.typingStep(step)
		}
	}
	sc.finish()
}

// scenario is one run of the scope property: the server, the connections
// with the model of each, and what was sent.
type scenario struct {
	t     *testing.T
	r     *rand.Rand
	s     *testServer
	conns []*modelConn

	checked, auths, moves, typings int
	dash                           map[string]string              // newest dashboard tag by key
	dashMsgs                       map[string]schema.Message      // newest dashboard by key
	sentTyping                     map[string]map[*modelConn]bool // target → who may receive it
}

// connect dials n connections with random tokens and subscriptions, and
// has each join presence.
func (sc *scenario) connect(n int) {
	t, r := sc.t, sc.r
	for i := range n {
		k := randomToken(r, propUsers[r.IntN(len(propUsers))])
		sub, q := randomSub(r, k)
		c := &modelConn{tok: k, sub: sub, viewing: fmt.Sprint("c", i), typing: map[string]bool{}}
		c.p = dialProbe(t, sc.s.url, fmt.Sprintf("conn %d (user %d)", i, k.user), k.mint(t), q)
		sc.conns = append(sc.conns, c)
	}
	for _, c := range sc.conns {
		c.p.send(`{"type":"presence","viewing":"` + c.viewing + `"}`)
	}
	checkPresence(t, sc.conns)
}

// randomSub returns a subscription given at connect, as the model holds
// it and as the query string says it.
func randomSub(r *rand.Rand, k modelToken) (modelSub, string) {
	sub := modelSub{all: true}
	var q []string
	if r.IntN(2) == 0 { // a types subscription; always with the marker's type
		sub.types = []string{schema.TypeVoting}
		for _, ty := range []string{schema.TypeGuarantee, schema.TypeAttendance, schema.TypeDashboard} {
			if r.IntN(2) == 0 {
				sub.types = append(sub.types, ty)
			}
		}
		q = append(q, "types="+strings.Join(sub.types, ","))
	}
	if r.IntN(2) == 0 { // a committees subscription, asking for any
		sub.all = false
		var asked []string
		for _, c := range propCommittees {
			if r.IntN(2) == 0 {
				asked = append(asked, fmt.Sprint(c))
				if k.role == RoleAdmin || k.has(c) {
					sub.committees = append(sub.committees, c)
				}
			}
		}
		q = append(q, "committees="+strings.Join(asked, ","))
	}
	return sub, strings.Join(q, "&")
}

// publishStep publishes a few messages, then a marker, and checks that
// every connection received exactly the ones it may, in order.
func (sc *scenario) publishStep(step int) {
	t, r := sc.t, sc.r
	var published []schema.Message
	var tagsOf []string
	for n := 1 + r.IntN(4); n > 0; n-- {
		m := randomMessage(r)
		tag := fmt.Sprintf("s%d-%d", step, n)
		sc.s.publishMsg(t, m, tag)
		if m.DashboardKey != "" {
			sc.dash[m.DashboardKey], sc.dashMsgs[m.DashboardKey] = tag, m
		}
		published, tagsOf = append(published, m), append(tagsOf, tag)
	}
	marker := fmt.Sprintf("marker %d", step)
	sc.s.publishMsg(t, schema.Message{Type: schema.TypeVoting}, marker)
	for _, c := range sc.conns {
		var want []string
		for i, m := range published {
			if c.tok.mayReceive(m) && c.sub.allows(m) {
				want = append(want, tagsOf[i])
			}
		}
		want = append(want, marker)
		sc.checked += len(published)
		got := c.collect(t, c.p.until(func(f []byte) bool { return frameJSON(f)["tag"] == marker }))
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: %s (token %+v, subscription %+v) received %v, want %v", step, c.p.name, c.tok, c.sub, got, want)
		}
	}
}

// authStep sends an auth frame (same user, another role and committees)
// on a connection and checks the presence state and the dashboards that
// follow auth_ok.
func (sc *scenario) authStep(step int) {
	t, r := sc.t, sc.r
	c := sc.conns[r.IntN(len(sc.conns))]
	if c.auths >= int(authBurst) { // the limit allows a burst of 3
		return
	}
	c.auths++
	sc.auths++
	c.tok = randomToken(r, c.tok.user)
	if !c.sub.all {
		c.sub.committees = slices.DeleteFunc(c.sub.committees, func(id int64) bool { return c.tok.role != RoleAdmin && !c.tok.has(id) })
	}
	c.p.send(`{"type":"auth","token":"` + c.tok.mint(t) + `"}`)
	c.collect(t, c.p.until(func(f []byte) bool { return frameType(f) == "auth_ok" }))
	if f := c.p.next(); frameType(f) != "presence_state" {
		t.Fatalf("step %d: %s: after auth_ok %s, want presence_state", step, c.p.name, f)
	} else {
		c.p.apply(f)
	}
	// The dashboards the new token and the subscription allow.
	var want []string
	for key, tag := range sc.dash {
		if m := sc.dashMsgs[key]; c.tok.mayReceive(m) && c.sub.allows(m) {
			want = append(want, tag)
		}
	}
	var got []string
	for range want {
		got = append(got, c.collect(t, [][]byte{c.p.next()})...)
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("step %d: %s after auth (token %+v) received dashboards %v, want %v", step, c.p.name, c.tok, got, want)
	}
	checkPresence(t, sc.conns)
}

// presenceStep changes what a connection views.
func (sc *scenario) presenceStep(step int) {
	c := sc.conns[sc.r.IntN(len(sc.conns))]
	if c.moved >= 2 {
		return
	}
	c.moved++
	sc.moves++
	c.viewing = fmt.Sprint("w", step)
	c.p.send(`{"type":"presence","viewing":"` + c.viewing + `"}`)
	checkPresence(sc.t, sc.conns)
}

// typingStep sends a typing frame and waits until every connection that
// may see its sender received it.
func (sc *scenario) typingStep(step int) {
	t := sc.t
	c := sc.conns[sc.r.IntN(len(sc.conns))]
	if c.typed >= 2 {
		return
	}
	c.typed++
	sc.typings++
	target := fmt.Sprint("t", step)
	receivers := map[*modelConn]bool{}
	for _, o := range sc.conns {
		if o.tok.user != c.tok.user && o.tok.seesUser(c.tok.user, c.tok.committees) {
			receivers[o] = true
		}
	}
	sc.sentTyping[target] = receivers
	c.p.send(`{"type":"typing","target":"` + target + `"}`)
	c.collect(t, c.p.sync())
	for o := range receivers {
		for !o.typing[target] {
			o.collect(t, [][]byte{o.p.next()})
		}
	}
}

// finish puts a last barrier on every presence queue (each connection's
// own change arrives after anything queued for it before), then checks
// that each typing frame reached exactly its receivers.
func (sc *scenario) finish() {
	for i, c := range sc.conns {
		c.viewing = fmt.Sprint("end", i)
		c.p.send(`{"type":"presence","viewing":"` + c.viewing + `"}`)
	}
	checkPresence(sc.t, sc.conns)
	for target, receivers := range sc.sentTyping {
		for _, c := range sc.conns {
			if c.typing[target] != receivers[c] {
				sc.t.Errorf("typing %s: %s received it: %v, want %v", target, c.p.name, c.typing[target], receivers[c])
			}
		}
	}
}

func randomMessage(r *rand.Rand) schema.Message {
	m := schema.Message{Type: propTypes[r.IntN(len(propTypes))]}
	pick := func(ids []int64) int64 { return ids[r.IntN(len(ids))] }
	switch r.IntN(8) {
	case 0: // election-wide
	case 1:
		m.Committee, m.HasCommittee = pick(propCommittees), true
	case 2:
		m.Owner, m.HasOwner = pick(propUsers), true
	case 3:
		m.Committee, m.HasCommittee = pick(propCommittees), true
		m.Owner, m.HasOwner = pick(propUsers), true
	case 4: // a scope that could not be read: admins only
		m.AdminOnly = true
		if r.IntN(2) == 0 {
			m.Owner, m.HasOwner = pick(propUsers), true
		}
	case 5:
		m = dashboard(schema.DashboardAdmin, 0)
	case 6:
		m = dashboard(schema.DashboardSupervisor, pick(propCommittees))
	case 7:
		m = dashboard(schema.DashboardPersonal, pick(propUsers))
	}
	return m
}

// collect applies frames to the connection's model view and returns the
// tags of the messages among them. Typing frames are recorded; one the
// connection may not receive fails the test when the scenario ends.
func (c *modelConn) collect(t *testing.T, frames [][]byte) []string {
	t.Helper()
	var out []string
	for _, f := range frames {
		m := frameJSON(f)
		switch frameType(f) {
		case "presence_state", "presence_diff":
			c.p.apply(f)
		case "typing":
			target := m["target"].(string)
			if c.typing[target] {
				t.Errorf("%s received typing %s twice", c.p.name, target)
			}
			c.typing[target] = true
		case "auth_ok", "subscribed", "pong":
		default:
			if tag, ok := m["tag"].(string); ok {
				out = append(out, tag)
			} else {
				t.Errorf("%s received %s", c.p.name, f)
			}
		}
	}
	return out
}

// checkPresence waits until every connection's presence view is what its
// token allows of the model's users.
func checkPresence(t *testing.T, conns []*modelConn) {
	t.Helper()
	type user struct {
		role       string
		committees []int64
		viewing    []string
	}
	users := map[int64]*user{}
	for _, c := range conns {
		u := users[c.tok.user]
		if u == nil {
			u = &user{}
			users[c.tok.user] = u
		}
		u.role = strongerRole(u.role, c.tok.role)
		u.committees = append(u.committees, c.tok.committees...)
		if c.viewing != "" && !slices.Contains(u.viewing, c.viewing) {
			u.viewing = append(u.viewing, c.viewing)
		}
	}
	for _, c := range conns {
		want := map[int64]string{}
		for id, u := range users {
			if c.tok.seesUser(id, u.committees) {
				v := slices.Clone(u.viewing)
				slices.Sort(v)
				want[id] = u.role + "[" + strings.Join(v, ",") + "]"
			}
		}
		wantS := viewString(want)
		deadline := time.After(10 * time.Second)
		for c.p.view == nil || viewString(c.p.view) != wantS {
			select {
			case f, ok := <-c.p.frames:
				if !ok {
					t.Fatalf("%s closed: %v", c.p.name, <-c.p.closed)
				}
				if tags := c.collect(t, [][]byte{f}); len(tags) > 0 {
					t.Fatalf("%s received messages %v outside a publish step", c.p.name, tags)
				}
			case <-deadline:
				t.Fatalf("%s (token %+v) sees presence %q, want %q", c.p.name, c.tok, viewString(c.p.view), wantS)
			}
		}
	}
}
