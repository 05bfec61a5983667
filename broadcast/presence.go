package broadcast

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/walcast/walcast/internal/jsonx"
)

// Presence tracks who is online and what they are viewing, and relays
// typing indicators. A connection takes part once it sends a presence
// frame: it is then listed (when its token names a user), gets a
// presence_state, then a presence_diff whenever someone it may see joins,
// leaves or changes what they view. Nothing of it is stored on the bus.
//
// A user is listed once however many connections (tabs, replicas) they
// have; viewing is the union over them. Visibility follows the delivery
// rules of messages: a user is visible to admins, to themself, and to
// connections whose token shares one of the user's committees.
//
// Without a link, presence is this process's alone. With a Redis link,
// replicas share their users (see RedisBus.PresenceLink).
type Presence struct {
	mu    sync.Mutex
	conns map[*client]*presenceConn
	// Who may see whom, indexed like the hub indexes messages, so that a
	// change costs the connections that may see it rather than every
	// connection: admins see everyone, byCommittee the users sharing a
	// committee, byUser a user's own connections (admins included).
	admins      map[*client]struct{}
	byCommittee map[int64]map[*client]struct{}
	byUser      map[int64]map[*client]struct{}
	gen         uint64                              // visit generation, so a connection in several sets is visited once
	self        map[int64]*presenceEntry            // this process's users
	remote      map[string]map[int64]*presenceEntry // other replicas' users, by replica
	merged      map[int64]*presenceEntry            // everyone, as announced to connections
	// mergedBy indexes merged by committee, so that a presence_state costs
	// the users the connection may see, not everyone online.
	mergedBy map[int64]map[int64]*presenceEntry
	link     presenceLink
}

// presenceLink shares this process's users with other replicas.
type presenceLink interface {
	// changed is called, with Presence.mu held, when a local user's entry
	// changed (nil: the user left this process). It must not block.
	changed(user int64, e *presenceEntry)
	// typing relays a typing frame to the other replicas; it must not block.
	typing(t typingEvent)
}

// presenceConn is one connection taking part in presence. It keeps no
// principal of its own for visibility: that is always the connection's
// current one (client.principal); indexed is only what the index filed
// it under, to remove it.
type presenceConn struct {
	viewing string
	joining bool
	indexed *Principal
	visited uint64
}

// presenceEntry is one user as others see them.
type presenceEntry struct {
	UserID     int64    `json:"user_id"`
	Role       string   `json:"role"`
	Committees []int64  `json:"committees"` // sorted; used for visibility, not sent
	Viewing    []string `json:"viewing"`    // sorted, without duplicates
}

func (e *presenceEntry) equal(o *presenceEntry) bool {
	if e == nil || o == nil {
		return e == o
	}
	return e.UserID == o.UserID && e.Role == o.Role && slices.Equal(e.Committees, o.Committees) && slices.Equal(e.Viewing, o.Viewing)
}

// visibleTo applies the delivery rules to a listed user.
func (e *presenceEntry) visibleTo(p *Principal) bool {
	return p.SeesUser(e.UserID, e.Committees)
}

// NewPresence returns an in-process Presence.
func NewPresence() *Presence {
	return &Presence{
		conns:       map[*client]*presenceConn{},
		admins:      map[*client]struct{}{},
		byCommittee: map[int64]map[*client]struct{}{},
		byUser:      map[int64]map[*client]struct{}{},
		self:        map[int64]*presenceEntry{},
		remote:      map[string]map[int64]*presenceEntry{},
		merged:      map[int64]*presenceEntry{},
		mergedBy:    map[int64]map[int64]*presenceEntry{},
	}
}

// presenceEvent is a frame queued for a connection's delivery. epoch ties
// it to the principal and state it was computed for: after a lost presence
// frame or an auth frame delivery drops the older frames still queued
// (a fresh presence_state replaces them).
type presenceEvent struct {
	frame []byte
	epoch uint64 // the connection's epoch + 1 when queued
	// from is the sender of a typing frame (nil for presence frames): the
	// delivery checks it against the principal in force when it writes.
	from *presenceEntry
}

// clientEvents is the per-connection side of presence.
type clientEvents struct {
	events chan presenceEvent
	epoch  atomic.Uint64
	lost   atomic.Bool // a presence frame did not fit the queue
}

// eventQueue is small: presence is opt-in, so most connections never use it,
// and a connection whose queue overflows gets a fresh presence_state.
const eventQueue = 16

// push queues a presence frame (from nil) or a typing frame for c without
// blocking; pr.mu is held, which orders it with the epoch changes.
func (c *client) push(frame []byte, from *presenceEntry) {
	ev := presenceEvent{frame: frame, epoch: c.ev.epoch.Load() + 1, from: from}
	select {
	case c.ev.events <- ev:
	default:
		if from == nil { // a lost typing frame is just lost
			c.ev.lost.Store(true)
		}
	}
	c.wakeUp()
}

// join adds c to presence or changes what it views, answering a presence
// frame (after the rate limit: see request).
func (pr *Presence) join(c *client, viewing string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pc, joined := pr.conns[c]
	if !joined {
		// Until its state is sent, a joining connection gets no diffs:
		// the state includes them.
		pc = &presenceConn{joining: true}
		pr.conns[c] = pc
		pr.index(c, pc)
	}
	pc.viewing = viewing
	p := c.principal.Load()
	if pc.indexed != p {
		// The token changed since the connection was filed (an auth
		// frame being applied): follow it.
		pr.unindex(c, pc)
		pr.index(c, pc)
	}
	pr.updateSelf(p.UserID)
	if !joined {
		c.push(pr.stateFrame(p), nil)
		pc.joining = false
	}
}

// leave removes a closed connection.
func (pr *Presence) leave(c *client) {
	c.presenceLimit.close()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pc, ok := pr.conns[c]
	if !ok {
		return
	}
	delete(pr.conns, c)
	pr.unindex(c, pc)
	pr.updateSelf(pc.indexed.UserID)
}

// reauth follows a connection whose token an auth frame replaced (its
// principal already stored): frames queued under the old token are
// dropped, the connection is filed under the new one, what others see of
// it changes, and it gets a fresh presence_state, returned here (nil when
// it takes no part in presence).
func (pr *Presence) reauth(c *client) []byte {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pc, ok := pr.conns[c]
	if ok {
		old := pc.indexed
		pr.unindex(c, pc)
		pr.index(c, pc)
		if p := c.principal.Load(); old.UserID != p.UserID {
			pr.updateSelf(old.UserID)
		}
		pr.updateSelf(pc.indexed.UserID)
	}
	// Everything queued for c until now (its own update above included)
	// is superseded by the state computed here, under the same lock.
	c.ev.epoch.Add(1)
	c.ev.lost.Store(false)
	if !ok {
		return nil
	}
	return pr.stateFrame(pc.indexed)
}

// resync returns a fresh presence_state for c after one of its presence
// frames was lost, and drops the frames still queued before it.
func (pr *Presence) resync(c *client) []byte {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	c.ev.epoch.Add(1)
	c.ev.lost.Store(false)
	if _, ok := pr.conns[c]; !ok {
		return nil
	}
	return pr.stateFrame(c.principal.Load())
}

// index files c under who may see it and whom it may see. pr.mu is held.
func (pr *Presence) index(c *client, pc *presenceConn) {
	p := c.principal.Load()
	pc.indexed = p
	addTo(pr.byUser, p.UserID, c)
	if p.Role == RoleAdmin {
		pr.admins[c] = struct{}{}
		return
	}
	for id := range p.Committees {
		addTo(pr.byCommittee, id, c)
	}
}

func (pr *Presence) unindex(c *client, pc *presenceConn) {
	p := pc.indexed
	if p == nil {
		return
	}
	removeFrom(pr.byUser, p.UserID, c)
	delete(pr.admins, c)
	for id := range p.Committees {
		removeFrom(pr.byCommittee, id, c)
	}
}

// audience calls f once for each connection in presence that may see
// user with any of committees (a superset: f still applies SeesUser). The
// cost is the size of those sets, not the number of connections. pr.mu is
// held.
func (pr *Presence) audience(user int64, committees [][]int64, f func(*client, *presenceConn)) {
	pr.gen++
	visit := func(set map[*client]struct{}) {
		for c := range set {
			pc := pr.conns[c]
			if pc == nil || pc.visited == pr.gen {
				continue
			}
			pc.visited = pr.gen
			f(c, pc)
		}
	}
	visit(pr.admins)
	visit(pr.byUser[user])
	for _, cs := range committees {
		for _, id := range cs {
			visit(pr.byCommittee[id])
		}
	}
}

// updateSelf recomputes this process's entry for user from its
// connections and announces the change. pr.mu is held.
func (pr *Presence) updateSelf(user int64) {
	var e *presenceEntry
	for c := range pr.byUser[user] {
		pc := pr.conns[c]
		if pc == nil {
			continue
		}
		if e == nil {
			e = &presenceEntry{UserID: user}
		}
		// What others see of a connection is its current token's.
		e.addConn(c.principal.Load(), pc.viewing)
	}
	e.normalize()
	if e.equal(pr.self[user]) {
		return
	}
	if e == nil {
		delete(pr.self, user)
	} else {
		pr.self[user] = e
	}
	if pr.link != nil {
		pr.link.changed(user, e)
	}
	pr.remerge([]int64{user})
}

func (e *presenceEntry) addConn(p *Principal, viewing string) {
	e.Role = strongerRole(e.Role, p.Role)
	for c := range p.Committees {
		e.Committees = append(e.Committees, c)
	}
	if viewing != "" {
		e.Viewing = append(e.Viewing, viewing)
	}
}

// merge adds another replica's entry of the same user.
func (e *presenceEntry) merge(o *presenceEntry) {
	e.Role = strongerRole(e.Role, o.Role)
	e.Committees = append(e.Committees, o.Committees...)
	e.Viewing = append(e.Viewing, o.Viewing...)
}

func (e *presenceEntry) normalize() {
	if e == nil {
		return
	}
	slices.Sort(e.Committees)
	e.Committees = slices.Compact(e.Committees)
	slices.Sort(e.Viewing)
	e.Viewing = slices.Compact(e.Viewing)
	if e.Committees == nil {
		e.Committees = []int64{}
	}
	if e.Viewing == nil {
		e.Viewing = []string{}
	}
}

// strongerRole keeps the widest role a user's tokens name.
func strongerRole(a, b string) string {
	rank := func(r string) int {
		switch r {
		case RoleAdmin:
			return 3
		case RoleSupervisor:
			return 2
		case "":
			return 0
		}
		return 1
	}
	if rank(b) > rank(a) || (rank(b) == rank(a) && b < a) {
		return b
	}
	return a
}

// setRemote replaces what one replica reports about one user (e nil: the
// user left it).
func (pr *Presence) setRemote(replica string, user int64, e *presenceEntry) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	users := pr.remote[replica]
	if e == nil {
		if users == nil {
			return
		}
		delete(users, user)
	} else {
		if users == nil {
			users = map[int64]*presenceEntry{}
			pr.remote[replica] = users
		}
		e.normalize()
		users[user] = e
	}
	pr.remerge([]int64{user})
}

// replaceRemote replaces everything known about other replicas: the
// periodic full read, which also drops replicas that went away.
func (pr *Presence) replaceRemote(all map[string]map[int64]*presenceEntry) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	touched := map[int64]bool{}
	for _, users := range pr.remote {
		for u := range users {
			touched[u] = true
		}
	}
	for _, users := range all {
		for u, e := range users {
			e.normalize()
			touched[u] = true
		}
	}
	pr.remote = all
	pr.remerge(keysOf(touched))
}

// dropReplica forgets a replica that announced it is going away.
func (pr *Presence) dropReplica(replica string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	users := pr.remote[replica]
	delete(pr.remote, replica)
	touched := make([]int64, 0, len(users))
	for u := range users {
		touched = append(touched, u)
	}
	pr.remerge(touched)
}

func keysOf(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// presenceDiff is one connection's share of a change.
type presenceDiff struct {
	joins, updates []*presenceEntry
	leaves         []int64
}

// remerge recomputes the merged entries of users and sends each
// connection the part of the change it may see. pr.mu is held.
func (pr *Presence) remerge(users []int64) {
	sort.Slice(users, func(i, j int) bool { return users[i] < users[j] })
	var diffs map[*client]*presenceDiff
	for _, u := range users {
		e := pr.mergedEntry(u)
		old := pr.merged[u]
		if e.equal(old) {
			continue
		}
		pr.setMerged(u, old, e)
		pr.collectDiffs(&diffs, u, old, e)
	}
	// Connections that see the same part of the change share one frame:
	// within one remerge a user id and its list name the entry exactly.
	frames := map[string][]byte{}
	var key []byte
	for c, d := range diffs {
		key = d.appendKey(key[:0])
		f, ok := frames[string(key)]
		if !ok {
			f = diffFrame(d)
			frames[string(key)] = f
		}
		c.push(f, nil)
	}
}

// mergedEntry merges user u's entries of this replica and of the others,
// normalized; nil when u is online nowhere. pr.mu is held.
func (pr *Presence) mergedEntry(u int64) *presenceEntry {
	var e *presenceEntry
	if s := pr.self[u]; s != nil {
		e = &presenceEntry{UserID: u}
		e.merge(s)
	}
	for _, rs := range pr.remote {
		if r := rs[u]; r != nil {
			if e == nil {
				e = &presenceEntry{UserID: u}
			}
			e.merge(r)
		}
	}
	e.normalize()
	return e
}

// setMerged replaces user u's merged entry old by e (nil: offline) in
// pr.merged and in the by-committee index. pr.mu is held.
func (pr *Presence) setMerged(u int64, old, e *presenceEntry) {
	if old != nil {
		for _, c := range old.Committees {
			if set := pr.mergedBy[c]; set != nil {
				delete(set, u)
				if len(set) == 0 {
					delete(pr.mergedBy, c)
				}
			}
		}
	}
	if e == nil {
		delete(pr.merged, u)
		return
	}
	pr.merged[u] = e
	for _, c := range e.Committees {
		set := pr.mergedBy[c]
		if set == nil {
			set = map[int64]*presenceEntry{}
			pr.mergedBy[c] = set
		}
		set[u] = e
	}
}

// collectDiffs adds user u's change from old to e to the diff of every
// connection that may see either: a join, a leave or an update. pr.mu is
// held.
func (pr *Presence) collectDiffs(diffs *map[*client]*presenceDiff, u int64, old, e *presenceEntry) {
	var committees [2][]int64
	if old != nil {
		committees[0] = old.Committees
	}
	if e != nil {
		committees[1] = e.Committees
	}
	pr.audience(u, committees[:], func(c *client, pc *presenceConn) {
		if pc.joining {
			return
		}
		p := c.principal.Load()
		before := old != nil && old.visibleTo(p)
		after := e != nil && e.visibleTo(p)
		if !before && !after {
			return
		}
		if *diffs == nil {
			*diffs = map[*client]*presenceDiff{}
		}
		d := (*diffs)[c]
		if d == nil {
			d = &presenceDiff{}
			(*diffs)[c] = d
		}
		switch {
		case !before:
			d.joins = append(d.joins, e)
		case !after:
			d.leaves = append(d.leaves, u)
		default:
			d.updates = append(d.updates, e)
		}
	})
}

// appendKey names the diff by its users and lists, for sharing frames.
func (d *presenceDiff) appendKey(b []byte) []byte {
	for _, e := range d.joins {
		b = strconv.AppendInt(append(b, 'j'), e.UserID, 10)
	}
	for _, e := range d.updates {
		b = strconv.AppendInt(append(b, 'u'), e.UserID, 10)
	}
	for _, u := range d.leaves {
		b = strconv.AppendInt(append(b, 'l'), u, 10)
	}
	return b
}

// Online returns the users online anywhere, for tests and metrics.
func (pr *Presence) Online() []int64 {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	out := make([]int64, 0, len(pr.merged))
	for u := range pr.merged {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// stateFrame lists the users p may see. pr.mu is held.
func (pr *Presence) stateFrame(p *Principal) []byte {
	var users []*presenceEntry
	if p.Role == RoleAdmin { // admins (few) see everyone
		users = make([]*presenceEntry, 0, len(pr.merged))
		for _, e := range pr.merged {
			users = append(users, e)
		}
	} else {
		// The users sharing one of p's committees, and p's own user,
		// looked up by committee; each checked against the rule.
		seen := map[int64]bool{}
		add := func(e *presenceEntry) {
			if e != nil && !seen[e.UserID] && e.visibleTo(p) {
				seen[e.UserID] = true
				users = append(users, e)
			}
		}
		add(pr.merged[p.UserID])
		for c := range p.Committees {
			for _, e := range pr.mergedBy[c] {
				add(e)
			}
		}
	}
	sort.Slice(users, func(i, j int) bool { return users[i].UserID < users[j].UserID })
	b := []byte(`{"type":"presence_state","users":`)
	b = appendEntries(b, users)
	return append(b, '}')
}

func diffFrame(d *presenceDiff) []byte {
	b := []byte(`{"type":"presence_diff","joins":`)
	b = appendEntries(b, d.joins)
	b = append(b, `,"updates":`...)
	b = appendEntries(b, d.updates)
	b = append(b, `,"leaves":`...)
	if d.leaves == nil {
		d.leaves = []int64{}
	}
	l, _ := json.Marshal(d.leaves)
	b = append(b, l...)
	return append(b, '}')
}

// appendEntries writes users as clients see them: user_id, role, viewing
// (their committees decide visibility but are not disclosed).
func appendEntries(b []byte, users []*presenceEntry) []byte {
	b = append(b, '[')
	for i, e := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user_id":`...)
		b = strconv.AppendInt(b, e.UserID, 10)
		b = append(b, `,"role":`...)
		b = jsonx.AppendString(b, e.Role)
		b = append(b, `,"viewing":`...)
		b = jsonx.AppendStrings(b, e.Viewing)
		b = append(b, '}')
	}
	return append(b, ']')
}

// sendEvent writes a queued presence or typing frame, or, when one of the
// connection's presence frames was lost, a fresh presence_state instead
// of the stale frames queued before it.
func (s *Server) sendEvent(ctx context.Context, c *client, ev presenceEvent) error {
	if c.ev.lost.Load() {
		if frame := s.presence.resync(c); frame != nil {
			if err := c.send(ctx, frame); err != nil {
				return err
			}
		}
	}
	if ev.epoch != c.ev.epoch.Load()+1 {
		return nil // queued before a lost frame or an auth frame: superseded
	}
	if ev.from != nil && !c.principal.Load().SeesUser(ev.from.UserID, ev.from.Committees) {
		return nil // a typing frame the token in force does not allow
	}
	return c.send(ctx, ev.frame)
}

// selfEntries returns this process's users.
func (pr *Presence) selfEntries() map[int64]*presenceEntry {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	out := make(map[int64]*presenceEntry, len(pr.self))
	for u, e := range pr.self {
		out[u] = e
	}
	return out
}
