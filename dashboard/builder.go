package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/ctxsleep"
	"github.com/walcast/walcast/internal/netguard"
	"github.com/walcast/walcast/schema"
)

// DefaultInterval is the shortest time between two recomputations of one
// dashboard.
const DefaultInterval = 500 * time.Millisecond

// DefaultBatch is the most dashboards one round computes and emits. A
// round that would emit more (start-up, a TRUNCATE, an unscoped delete:
// every user's and committee's dashboard) emits this many and carries the
// rest to the next rounds, so that a burst reaches the bus and the serve
// replicas' windows at a bounded rate: at the default interval, 4,000 a
// second, about a thirtieth of the default client window per round.
const DefaultBatch = 2000

// Config configures a Builder.
type Config struct {
	DatabaseURL string
	// Tables are the tracked tables. The first table of each of the kinds
	// guarantee, attendance and vote_count is aggregated; election_results
	// feeds no dashboard.
	Tables []schema.Table
	// CommitteeTable holds each committee's electors_count; default
	// "committee" in the guarantee table's schema. When it does not exist,
	// dashboards report electors as null.
	CommitteeTable string
	// Interval is the shortest time between two recomputations of one
	// dashboard (DefaultInterval when zero).
	Interval time.Duration
	// Batch is the most dashboards one round emits (DefaultBatch when
	// zero); the admin dashboard comes first, then committees', then
	// users'; the rest wait for the next rounds.
	Batch  int
	Logger *slog.Logger

	// QueryTimeout bounds one round of queries (default 30 s): a
	// connection that does not answer within it is closed and replaced.
	QueryTimeout time.Duration
	// Transport sets TCP keepalive and TCP_USER_TIMEOUT on the connection.
	Transport netguard.Options
	// OnReplaced is called with ("dashboard", reason) when the connection
	// was closed after a failed round ("timeout" when it did not answer,
	// "error" otherwise) and another will be opened.
	OnReplaced func(conn, reason string)
}

// Emitter stores computed dashboard messages. Their Pos is left for it to
// assign. An error sends the dashboards back to be recomputed after the
// interval.
type Emitter func(ctx context.Context, msgs []schema.Message) error

// Builder recomputes the dashboards that committed changes affect.
type Builder struct {
	cfg                                      Config
	log                                      *slog.Logger
	guarantee, attendance, voteCount, commit string // quoted table names; "" when not tracked
	kinds                                    map[string]schema.Kind
	// tables are the aggregated tables by qualified name (routing columns
	// for the dirty set), conf the aggregated table of each kind (its
	// configured columns).
	tables              map[string]schema.Table
	gConf, aConf, vConf schema.Table
	electorsCol         string // the committee table's electors column; "" none

	mu    sync.Mutex
	dirty dirtySet
	wake  chan struct{}

	// known are the users and committees whose dashboards were emitted:
	// after a TRUNCATE they must be told they are now empty.
	known dirtySet

	rounds, personal, supervisor, admin atomic.Uint64
	failed                              [3]atomic.Uint64 // by kindIndex
	// logged holds the failures already logged at error level, so that a
	// dashboard failing every round logs its fix once.
	logged map[string]bool
}

// dirtySet is what needs recomputing. Users and committees named by
// changes come before the backlog of "every dashboard" rounds (start-up,
// TRUNCATE), which is spread over later rounds: a change's dashboards
// are not held back behind tens of thousands of others.
type dirtySet struct {
	users, committees               map[int64]bool
	backlogUsers, backlogCommittees map[int64]bool
	admin                           bool
	allUsers, allCommittees         bool
	xids                            map[uint32]bool // transactions the result must include
}

func (d *dirtySet) empty() bool {
	return !d.admin && !d.allUsers && !d.allCommittees && len(d.users) == 0 && len(d.committees) == 0 &&
		len(d.backlogUsers) == 0 && len(d.backlogCommittees) == 0
}

func (d *dirtySet) user(id int64) {
	if d.users == nil {
		d.users = map[int64]bool{}
	}
	d.users[id] = true
}

func (d *dirtySet) committee(id int64) {
	if d.committees == nil {
		d.committees = map[int64]bool{}
	}
	d.committees[id] = true
}

func addID(m *map[int64]bool, id int64) {
	if *m == nil {
		*m = map[int64]bool{}
	}
	(*m)[id] = true
}

// merge adds o to d.
func (d *dirtySet) merge(o dirtySet) {
	for u := range o.users {
		d.user(u)
	}
	for c := range o.committees {
		d.committee(c)
	}
	for u := range o.backlogUsers {
		addID(&d.backlogUsers, u)
	}
	for c := range o.backlogCommittees {
		addID(&d.backlogCommittees, c)
	}
	d.admin = d.admin || o.admin
	d.allUsers = d.allUsers || o.allUsers
	d.allCommittees = d.allCommittees || o.allCommittees
	for x := range o.xids {
		if d.xids == nil {
			d.xids = map[uint32]bool{}
		}
		if len(d.xids) < maxXids {
			d.xids[x] = true
		}
	}
}

// New returns a Builder. It connects when Run starts.
func New(cfg Config) *Builder {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &Builder{cfg: cfg, log: cfg.Logger.With("component", "dashboard"), kinds: map[string]schema.Kind{}, wake: make(chan struct{}, 1), logged: map[string]bool{}}
	b.tables = map[string]schema.Table{}
	electorsFrom := schema.Table{Schema: "public"}
	for _, t := range cfg.Tables {
		var slot *string
		var conf *schema.Table
		switch t.Kind {
		case schema.KindGuarantee:
			slot, conf = &b.guarantee, &b.gConf
		case schema.KindAttendance:
			slot, conf = &b.attendance, &b.aConf
		case schema.KindVoteCount:
			slot, conf = &b.voteCount, &b.vConf
		default:
			continue
		}
		if *slot != "" {
			b.log.Warn("dashboards aggregate only the first table of each kind; ignoring", "table", t.Qualified(), "kind", t.Kind)
			continue
		}
		if t.Kind == schema.KindGuarantee {
			electorsFrom = t
		}
		*slot, *conf = t.QuotedIdent(), t
		b.kinds[t.Qualified()] = t.Kind
		b.tables[t.Qualified()] = t
	}
	b.commit, b.electorsCol = electorsFrom.ElectorsSource()
	if cfg.CommitteeTable != "" {
		b.commit = cfg.CommitteeTable
	}
	return b
}

// Stats counts recomputations since start.
type Stats struct {
	Rounds     uint64 // recompute rounds (one set of queries each)
	Personal   uint64 // personal dashboards computed
	Supervisor uint64 // supervisor (committee) dashboards computed
	Admin      uint64 // admin dashboards computed
	// Failed counts dashboards whose queries failed, by dashboard type
	// (schema.DashboardPersonal, …): they were skipped, the others sent.
	Failed map[string]uint64
}

// Stats returns the recomputation counters.
func (b *Builder) Stats() Stats {
	failed := map[string]uint64{}
	for i, k := range kindNames {
		failed[k] = b.failed[i].Load()
	}
	return Stats{Rounds: b.rounds.Load(), Personal: b.personal.Load(), Supervisor: b.supervisor.Load(), Admin: b.admin.Load(), Failed: failed}
}

// kindNames are the dashboard types by kindIndex.
var kindNames = [3]string{schema.DashboardPersonal, schema.DashboardSupervisor, schema.DashboardAdmin}

func kindIndex(typ string) int {
	for i, k := range kindNames {
		if k == typ {
			return i
		}
	}
	return len(kindNames) - 1
}

// Note records which dashboards the changes of a stored transaction
// affect. It is cheap and never blocks on the database.
func (b *Builder) Note(tx *schema.Tx) {
	var d dirtySet
	for i := range tx.Changes {
		ch := &tx.Changes[i]
		kind, ok := b.kinds[ch.Schema+"."+ch.Table]
		if !ok {
			continue
		}
		t := b.tables[ch.Schema+"."+ch.Table]
		d.admin = true
		if ch.Op == schema.Truncate || ch.Unscoped {
			d.allCommittees = true
			d.allUsers = d.allUsers || kind != schema.KindVoteCount
			continue
		}
		for _, row := range [2]schema.Row{ch.New, ch.Old} {
			if v, ok := getCol(row, t.CommitteeCol()); ok {
				if id, ok := parseID(v); ok {
					d.committee(id)
				}
			}
			if kind == schema.KindVoteCount {
				continue
			}
			if v, ok := getCol(row, t.OwnerCol()); ok {
				if id, ok := parseID(v); ok {
					d.user(id)
				}
			}
		}
	}
	if !d.admin {
		return
	}
	b.mu.Lock()
	b.dirty.merge(d)
	if b.dirty.xids == nil {
		b.dirty.xids = map[uint32]bool{}
	}
	if len(b.dirty.xids) < maxXids {
		b.dirty.xids[tx.Xid] = true
	}
	b.mu.Unlock()
	b.signal()
}

// maxXids bounds the transactions one round checks for visibility.
const maxXids = 1024

func (b *Builder) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take returns and clears the dirty set.
func (b *Builder) take() dirtySet {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dirty
	b.dirty = dirtySet{}
	return d
}

// giveBack returns a dirty set that could not be handled.
func (b *Builder) giveBack(d dirtySet) {
	b.mu.Lock()
	b.dirty.merge(d)
	b.mu.Unlock()
	b.signal()
}

// Run recomputes dirty dashboards and emits them until ctx ends. At start
// it computes every dashboard once. ready, when not nil, gates the work: a
// standby capture computes nothing, and nothing is computed while emit
// could not store the result.
func (b *Builder) Run(ctx context.Context, emit Emitter, ready func() bool) error {
	b.giveBack(dirtySet{admin: true, allUsers: true, allCommittees: true})
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var last time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.wake:
		}
		// At most one round per interval: changes arriving meanwhile
		// accumulate in the dirty set.
		wait := time.Until(last.Add(b.cfg.Interval))
		if failures > 0 {
			wait = max(wait, min(b.cfg.Interval<<min(failures, 5), 10*time.Second))
		}
		if !ctxsleep.Sleep(ctx, wait) {
			return nil
		}
		if ready != nil && !ready() {
			// Look again soon: readiness (streaming, a transaction
			// stored whole) comes without a change to announce it.
			if !ctxsleep.Sleep(ctx, min(b.cfg.Interval, 50*time.Millisecond)) {
				return nil
			}
			b.signal()
			continue
		}
		d := b.take()
		if d.empty() {
			continue
		}
		last = time.Now()
		switch b.round(ctx, &conn, d, emit) {
		case roundStopped:
			return nil
		case roundFailed:
			failures++
		default:
			failures = 0
		}
	}
}

// roundResult is how a round ended.
type roundResult int

const (
	roundDone    roundResult = iota // emitted
	roundFailed                     // d was given back, for a later round
	roundStopped                    // ctx ended
)

// round computes the dashboards of d on *conn, which it opens when nil
// and closes (setting it to nil) after a failed round, and emits them.
// What a round could not do is given back; the rest of a burst is carried
// to the next rounds.
func (b *Builder) round(ctx context.Context, conn **pgx.Conn, d dirtySet, emit Emitter) roundResult {
	if *conn == nil {
		c, err := b.connect(ctx)
		if err != nil {
			b.log.Error("cannot connect to compute dashboards; retrying", "err", err)
			b.giveBack(d)
			return roundFailed
		}
		*conn = c
	}
	// A round that does not finish in time closes the connection (pgx
	// closes a connection whose query's context ends mid-flight).
	rctx, cancel := context.WithTimeout(ctx, b.cfg.QueryTimeout)
	msgs, rest, err := b.compute(rctx, *conn, d)
	timedOut := rctx.Err() != nil
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return roundStopped
		}
		b.log.Error("computing dashboards failed; retrying on a new connection", "err", err, "timed_out", timedOut)
		b.dropConn(ctx, conn, timedOut)
		b.giveBack(d)
		return roundFailed
	}
	if err := emit(ctx, msgs); err != nil {
		if ctx.Err() != nil {
			return roundStopped
		}
		b.log.Debug("dashboards not stored; recomputing later", "err", err)
		b.giveBack(d)
		return roundFailed
	}
	b.rememberEmitted(msgs)
	if !rest.empty() {
		// The rest of a burst: the next round, one interval on.
		b.giveBack(rest)
	}
	return roundDone
}

// dropConn closes *conn after a failed round and counts its replacement.
func (b *Builder) dropConn(ctx context.Context, conn **pgx.Conn, timedOut bool) {
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	(*conn).Close(closeCtx)
	cancel()
	*conn = nil
	if b.cfg.OnReplaced != nil {
		reason := "error"
		if timedOut {
			reason = "timeout"
		}
		b.cfg.OnReplaced("dashboard", reason)
	}
}

// connect opens the connection dashboards are computed on, with the
// transport settings, within QueryTimeout unless the URL sets
// connect_timeout.
func (b *Builder) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(b.cfg.DatabaseURL)
	if err != nil {
		return nil, errors.New("parse database url: invalid URL")
	}
	cfg.DialFunc = b.cfg.Transport.Dialer(0).DialContext
	if cfg.ConnectTimeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.QueryTimeout)
		defer cancel()
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// rememberEmitted records the users and committees that have dashboards.
func (b *Builder) rememberEmitted(msgs []schema.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range msgs {
		switch m := &msgs[i]; {
		case m.HasOwner:
			b.known.user(m.Owner)
		case m.HasCommittee:
			b.known.committee(m.Committee)
		}
	}
}

// errNotVisible: a transaction already decoded from the WAL is not yet
// visible to new snapshots (PostgreSQL writes the commit record before it
// marks the transaction committed in memory).
var errNotVisible = errors.New("a committed transaction is not visible yet")

// compute runs the queries of one round in one snapshot: the admin
// dashboard, then up to the batch of committees' and users' dashboards.
// It returns the dashboards it computed and what is left for the next
// rounds. A dashboard whose queries fail is left out (see isolate); an
// error means the round as a whole could not run (connection lost).
func (b *Builder) compute(ctx context.Context, conn *pgx.Conn, d dirtySet) ([]schema.Message, dirtySet, error) {
	b.rounds.Add(1)
	var rest dirtySet
	tx, err := b.beginVisible(ctx, conn, d.xids)
	if err != nil {
		return nil, rest, err
	}
	defer tx.Rollback(ctx)

	q := &queries{b: b, tx: tx, conn: conn}
	if err := q.prepare(ctx); err != nil {
		return nil, rest, err
	}
	backUsers, backCommittees, err := b.backlogs(ctx, q, d)
	if err != nil {
		return nil, rest, err
	}
	budget := b.cfg.Batch
	if d.admin {
		budget--
	}
	committees := pick(&budget, d.committees, backCommittees, &rest.committees, &rest.backlogCommittees)
	users := pick(&budget, d.users, backUsers, &rest.users, &rest.backlogUsers)
	msgs, err := b.queryDashboards(ctx, q, d.admin, committees, users)
	if err != nil {
		return nil, rest, err
	}
	return msgs, rest, nil
}

// beginVisible begins the round's read-only snapshot once the
// transactions xids are visible in it, waiting up to about a second for
// them before it computes anyway.
func (b *Builder) beginVisible(ctx context.Context, conn *pgx.Conn, xids map[uint32]bool) (pgx.Tx, error) {
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	for attempt := 0; ; attempt++ {
		tx, err := conn.BeginTx(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("begin: %w", err)
		}
		err = visible(ctx, tx, xids)
		if err == nil {
			return tx, nil
		}
		_ = tx.Rollback(ctx)
		if !errors.Is(err, errNotVisible) {
			return nil, err
		}
		if attempt == 200 {
			b.log.Warn("a committed transaction stayed invisible for 1 s; computing dashboards anyway")
			if tx, err = conn.BeginTx(ctx, opts); err != nil {
				return nil, fmt.Errorf("begin: %w", err)
			}
			return tx, nil
		}
		if !ctxsleep.Sleep(ctx, 5*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// backlogs returns the users and committees of "every dashboard" rounds
// still to compute: the backlog carried, plus, when d asks for all of a
// kind, every one the database holds and every one emitted before (a
// TRUNCATE empties those).
func (b *Builder) backlogs(ctx context.Context, q *queries, d dirtySet) (users, committees []int64, err error) {
	users, committees = keys(d.backlogUsers), keys(d.backlogCommittees)
	if d.allUsers {
		all, err := q.allUsers(ctx)
		if err != nil {
			return nil, nil, err
		}
		users = union(users, all, b.knownIDs(true))
	}
	if d.allCommittees {
		all, err := q.allCommittees(ctx)
		if err != nil {
			return nil, nil, err
		}
		committees = union(committees, all, b.knownIDs(false))
	}
	return users, committees, nil
}

// queryDashboards computes the admin dashboard (when admin), then the
// committees' and the users' dashboards, and counts them.
func (b *Builder) queryDashboards(ctx context.Context, q *queries, admin bool, committees, users []int64) ([]schema.Message, error) {
	at := schema.CommitTime(time.Now())
	var msgs []schema.Message
	if admin {
		m, ok, err := q.admin(ctx, at)
		if err != nil {
			return nil, err
		}
		if ok {
			msgs = append(msgs, m)
			b.admin.Add(1)
		}
	}
	if len(committees) > 0 {
		ms, err := q.supervisor(ctx, committees, at)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, ms...)
		b.supervisor.Add(uint64(len(ms)))
	}
	if len(users) > 0 {
		ms, err := q.personal(ctx, users, at)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, ms...)
		b.personal.Add(uint64(len(ms)))
	}
	return msgs, nil
}

// pick returns up to *budget ids, those named by changes (live) first,
// then the backlog, and files the ones left over into restLive and
// restBacklog. It does not modify live: a failed round gives it back.
func pick(budget *int, live map[int64]bool, backlog []int64, restLive, restBacklog *map[int64]bool) []int64 {
	var out []int64
	for id := range live {
		if *budget > 0 {
			out = append(out, id)
			*budget--
		} else {
			addID(restLive, id)
		}
	}
	for _, id := range backlog {
		switch {
		case live[id]:
		case *budget > 0:
			out = append(out, id)
			*budget--
		default:
			addID(restBacklog, id)
		}
	}
	return out
}

// visible reports errNotVisible while one of xids is still in progress in
// tx's snapshot.
func visible(ctx context.Context, tx pgx.Tx, xids map[uint32]bool) error {
	if len(xids) == 0 {
		return nil
	}
	list := make([]int64, 0, len(xids))
	for x := range xids {
		list = append(list, int64(x))
	}
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot()) x
		WHERE (x::text::bigint % 4294967296) = ANY($1)`, list).Scan(&n)
	if err != nil {
		return fmt.Errorf("check visibility: %w", err)
	}
	if n > 0 {
		return errNotVisible
	}
	return nil
}

func (b *Builder) knownIDs(users bool) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if users {
		return keys(b.known.users)
	}
	return keys(b.known.committees)
}

func keys(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func union(lists ...[]int64) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, l := range lists {
		for _, v := range l {
			if !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// parseID reads an integer id column's JSON (a bare number; a quoted one
// for numeric and text columns) by the rule routing uses (schema.ParseID),
// so a dashboard is marked changed for exactly the id its message is
// routed by. null and unreadable values are not ids.
func parseID(v []byte) (int64, bool) {
	s := string(v)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	n, err := schema.ParseID(s)
	return n, err == nil
}

// getCol reads a routing column of row; a table without it ("") has none.
func getCol(row schema.Row, col string) ([]byte, bool) {
	if col == "" {
		return nil, false
	}
	return row.Get(col)
}

// warnOnce logs a warning the first time key is seen: a dashboard field
// that cannot be computed is said once, at the first round, not every
// round.
func (b *Builder) warnOnce(key, msg string, attrs ...any) {
	b.mu.Lock()
	first := !b.logged["warn:"+key]
	b.logged["warn:"+key] = true
	b.mu.Unlock()
	if first {
		b.log.Warn(msg, attrs...)
	}
}

// status maps an application's status value to walcast's name for it
// (the guarantee table's dashboard status_values).
func (b *Builder) status(s *string) *string {
	if s == nil || b.gConf.Dashboard == nil {
		return s
	}
	if v, ok := b.gConf.Dashboard.StatusValues[*s]; ok {
		return &v
	}
	return s
}
