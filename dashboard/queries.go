package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/schema"
)

// The aggregate queries. Each is served by an index of schema/election.sql:
// guarantee (user_id, status) and (committee_id, status), attendance
// (user_id) and (committee_id, elector_id), vote_count (committee_id,
// candidate_id). Column names are the election schema's: guarantee.status,
// attendance.attended, vote_count.votes, committee.electors_count.

// NULLs: rows are never refused for a NULL. A guarantee or attendance
// row whose user_id is NULL has no owner, so it is in no personal
// dashboard, and one whose committee_id is NULL in no committee's; both
// count in the admin dashboard. A NULL status counts as "unset"; a NULL
// attended as not attended; a NULL votes as 0; a vote_count row whose
// candidate_id is NULL is skipped (there is no candidate to credit); a
// NULL electors_count leaves that committee's electors null.

// queries runs one round's queries in one read-only snapshot.
type queries struct {
	b            *Builder
	tx           pgx.Tx
	conn         *pgx.Conn
	hasCommittee bool // the committee table exists, with an id column
	hasElectors  bool // and its electors column
	// g, a and v are the columns of the guarantee, attendance and
	// vote_count tables this round can read ("" for one that is missing:
	// the dashboard field it feeds is null).
	g, a, v cols
}

// cols are the columns of one aggregated table that the queries read.
type cols struct {
	committee, owner string
	value            string // status, attended or votes
}

// by returns the routing column of the given kind ("owner" or
// "committee").
func (c cols) by(kind string) string {
	if kind == byOwner {
		return c.owner
	}
	return c.committee
}

const (
	byOwner     = "owner"
	byCommittee = "committee"
)

// prepare looks up, in the round's snapshot, which of the columns the
// dashboards read exist: a missing one leaves its field null (one warning
// per field, and a walcast check finding) instead of failing the round.
func (q *queries) prepare(ctx context.Context) error {
	var err error
	if q.g, err = q.resolve(ctx, q.b.guarantee, q.b.gConf, dashCol(q.b.gConf, "status"), "guarantee counts by status"); err != nil {
		return err
	}
	if q.a, err = q.resolve(ctx, q.b.attendance, q.b.aConf, dashCol(q.b.aConf, "attended"), "attendance counts"); err != nil {
		return err
	}
	if q.v, err = q.resolve(ctx, q.b.voteCount, q.b.vConf, dashCol(q.b.vConf, "votes"), "votes"); err != nil {
		return err
	}
	q.hasCommittee, q.hasElectors = false, false
	if q.b.commit == "" {
		return nil
	}
	names, err := q.columnsOf(ctx, q.b.commit)
	if err != nil {
		return err
	}
	q.hasCommittee = names["id"]
	q.hasElectors = q.hasCommittee && q.b.electorsCol != "" && names[q.b.electorsCol]
	if names != nil && q.b.electorsCol != "" && !q.hasElectors {
		q.b.warnOnce(q.b.commit+"."+q.b.electorsCol, "dashboards send electors as null: the committee table lacks the column",
			"table", q.b.commit, "column", q.b.electorsCol,
			"fix", "name the committee table and its electors column in the config file (dashboard: {electors: committee_table.column}) or electors: none; walcast check lists it")
	}
	return nil
}

// dashCol returns the configured dashboard column of t for field, or the
// default name; "" for none.
func dashCol(t schema.Table, field string) string {
	var set string
	if d := t.Dashboard; d != nil {
		switch field {
		case "status":
			set = d.Status
		case "attended":
			set = d.Attended
		case "votes":
			set = d.Votes
		}
	}
	switch set {
	case "":
		return field
	case schema.NoColumn:
		return ""
	}
	return set
}

// columnsOf returns the columns of a table; nil when it does not exist.
func (q *queries) columnsOf(ctx context.Context, quoted string) (map[string]bool, error) {
	var names []string
	err := q.tx.QueryRow(ctx, `SELECT CASE WHEN to_regclass($1) IS NOT NULL THEN ARRAY(SELECT attname::text FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped) END`, quoted).Scan(&names)
	if err != nil {
		return nil, fmt.Errorf("look up the columns of %s: %w", quoted, roundError{err})
	}
	if names == nil {
		return nil, nil
	}
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m, nil
}

// resolve returns the columns of an aggregated table that exist.
func (q *queries) resolve(ctx context.Context, quoted string, t schema.Table, value, what string) (cols, error) {
	if quoted == "" {
		return cols{}, nil
	}
	names, err := q.columnsOf(ctx, quoted)
	if err != nil || names == nil {
		return cols{}, err // a missing table: walcast check says so
	}
	c := cols{committee: t.CommitteeCol(), owner: t.OwnerCol(), value: value}
	for _, f := range []struct {
		col  *string
		what string
	}{{&c.committee, "committee dashboards do not count its rows"}, {&c.owner, "personal dashboards do not count its rows"}, {&c.value, "dashboards send " + what + " as null"}} {
		if *f.col != "" && !names[*f.col] && f.col == &c.owner && t.Kind == schema.KindVoteCount {
			*f.col = "" // votes are counted by committee only
			continue
		}
		if *f.col != "" && !names[*f.col] {
			q.b.warnOnce(t.Qualified()+"."+*f.col, f.what+": the table lacks the column",
				"table", t.Qualified(), "column", *f.col,
				"fix", "name the table's column in the config file (docs/configuration.md), or none; walcast check lists it")
			*f.col = ""
		}
	}
	return c, nil
}

// savepoint runs f in a savepoint, so that a failing query leaves the
// round's transaction usable for the other dashboards.
func (q *queries) savepoint(ctx context.Context, f func() error) error {
	sp, err := q.tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("savepoint: %w", roundError{err})
	}
	if err := f(); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return fmt.Errorf("roll back to savepoint after %v: %w", err, roundError{rerr})
		}
		return err
	}
	if err := sp.Commit(ctx); err != nil {
		return fmt.Errorf("release savepoint: %w", roundError{err})
	}
	return nil
}

// roundError marks a failure of the round as a whole (the connection, the
// transaction), as opposed to a query that fails for some dashboards.
type roundError struct{ err error }

func (e roundError) Error() string { return e.err.Error() }
func (e roundError) Unwrap() error { return e.err }

// wholeRound reports whether err stops the round, to be retried with
// backoff: the connection or the transaction failed, or the server is
// shutting down or out of resources. Any other error (a query PostgreSQL
// refuses, a value that does not fit its field) belongs to the dashboards
// of that query.
func (q *queries) wholeRound(ctx context.Context, err error) bool {
	if ctx.Err() != nil || q.conn.IsClosed() || errors.As(err, new(roundError)) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch sqlClass(pe) {
		case "08", "25", "40", "53", "57", "58":
			return pe.Code != "57014" // a statement timeout: smaller batches may pass
		}
		return false
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.Timeout(err)
}

// structural reports whether err holds for any set of dashboards of the
// query (a missing column, a type without the operator), so that looking
// for the one failing dashboard is pointless.
func structural(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (sqlClass(pe) == "42" || sqlClass(pe) == "0A")
}

// sqlClass is the class of an SQLSTATE: its first two characters.
func sqlClass(pe *pgconn.PgError) string {
	if len(pe.Code) < 2 {
		return ""
	}
	return pe.Code[:2]
}

// isolate computes the dashboards of ids with f, in a savepoint. When f
// fails for a reason that may belong to some of them (a value out of
// range in one committee's rows), it halves ids until it has found the
// dashboards that fail, and computes the others: one bad dashboard never
// holds back the rest. Failed dashboards are counted and logged (see
// fail), and left out until a change touches them again. The error is
// for the round as a whole (see wholeRound).
func isolate[T any](ctx context.Context, q *queries, typ string, ids []int64, f func([]int64) (map[int64]*T, error)) (map[int64]*T, error) {
	out := make(map[int64]*T, len(ids))
	var walk func([]int64) error
	walk = func(ids []int64) error {
		var res map[int64]*T
		err := q.savepoint(ctx, func() error {
			var err error
			res, err = f(ids)
			return err
		})
		if err == nil {
			for id, v := range res {
				out[id] = v
			}
			return nil
		}
		if q.wholeRound(ctx, err) {
			return err
		}
		if len(ids) == 1 || structural(err) {
			q.b.fail(typ, ids, err)
			return nil
		}
		if err := walk(ids[:len(ids)/2]); err != nil {
			return err
		}
		return walk(ids[len(ids)/2:])
	}
	return out, walk(ids)
}

// fail counts dashboards whose queries failed and logs the failure once
// at error level, with the fix.
func (b *Builder) fail(typ string, ids []int64, err error) {
	b.failed[kindIndex(typ)].Add(uint64(max(1, len(ids))))
	key := typ + ": " + err.Error()
	b.mu.Lock()
	first := !b.logged[key] && len(b.logged) < 1000
	if first {
		b.logged[key] = true
	}
	b.mu.Unlock()
	attrs := []any{"dashboard_type", typ, "dashboards", len(ids), "err", err,
		"fix", "make the tracked tables' columns match schema/election.sql (integer user_id and committee_id, " +
			"text status, boolean attended, integer candidate_id and votes that fit a bigint), " +
			"or turn dashboards off with --dashboard-interval 0"}
	if len(ids) > 0 {
		attrs = append(attrs, "first_id", ids[0])
	}
	if first {
		b.log.Error("dashboards cannot be computed; skipping them (the others are sent) until a change touches them again", attrs...)
		return
	}
	b.log.Debug("dashboards cannot be computed; skipping them", attrs...)
}

// Guarantees counts guarantees by status; Total is their sum.
type Guarantees struct {
	Strong int64 `json:"strong"`
	Medium int64 `json:"medium"`
	Weak   int64 `json:"weak"`
	// Other counts statuses other than the three above, by name.
	Other map[string]int64 `json:"other,omitempty"`
	// Unset counts guarantees whose status is NULL.
	Unset int64 `json:"unset,omitempty"`
	Total int64 `json:"total"`
}

func (g *Guarantees) add(status *string, n int64) {
	g.Total += n
	if status == nil {
		g.Unset += n
		return
	}
	switch *status {
	case "strong":
		g.Strong += n
	case "medium":
		g.Medium += n
	case "weak":
		g.Weak += n
	default:
		if g.Other == nil {
			g.Other = map[string]int64{}
		}
		g.Other[*status] += n
	}
}

// Attendance is attendance marked against the electors expected.
type Attendance struct {
	Attended *int64 `json:"attended"` // null when the attended or routing column is missing
	Electors *int64 `json:"electors"` // null when the committee table or its electors column is missing
}

// Votes is one candidate's votes.
type Votes struct {
	CandidateID int64 `json:"candidate_id"`
	Votes       int64 `json:"votes"`
}

// Personal is the data of a personal dashboard.
// A field is null when the columns it needs are missing (see prepare).
type Personal struct {
	Guarantees       *Guarantees `json:"guarantees"`
	AttendanceMarked *int64      `json:"attendance_marked"`
}

// Supervisor is the data of a committee's dashboard.
// A field is null when the columns it needs are missing (see prepare).
type Supervisor struct {
	Guarantees *Guarantees `json:"guarantees"`
	Attendance Attendance  `json:"attendance"`
	Votes      []Votes     `json:"votes"`
	TotalVotes *int64      `json:"total_votes"`
}

// Admin is the data of the election-wide dashboard.
type Admin struct {
	Supervisor
	Committees int64 `json:"committees"`
}

// frame is a dashboard_update message, fields in the order clients see.
type frame struct {
	Type          string `json:"type"`
	DashboardType string `json:"dashboard_type"`
	UserID        *int64 `json:"user_id,omitempty"`
	CommitteeID   *int64 `json:"committee_id,omitempty"`
	Data          any    `json:"data"`
	Timestamp     string `json:"timestamp"`
}

func message(typ string, id int64, data any, at string) (schema.Message, error) {
	f := frame{Type: schema.TypeDashboard, DashboardType: typ, Data: data, Timestamp: at}
	m := schema.Message{Type: schema.TypeDashboard, DashboardKey: schema.DashboardKey(typ, id)}
	switch typ {
	case schema.DashboardPersonal:
		f.UserID = &id
		m.Owner, m.HasOwner = id, true
	case schema.DashboardSupervisor:
		f.CommitteeID = &id
		m.Committee, m.HasCommittee = id, true
	default:
		m.AdminOnly = true
	}
	b, err := json.Marshal(f)
	if err != nil {
		return m, fmt.Errorf("encode %s dashboard: %w", typ, err)
	}
	m.JSON = b
	return m, nil
}

// scan runs sql and calls row for each result row.
func (q *queries) scan(ctx context.Context, sql string, args []any, row func(pgx.Rows) error) error {
	rows, err := q.tx.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("query %q: %w", sql, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return fmt.Errorf("read %q: %w", sql, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query %q: %w", sql, err)
	}
	return nil
}

// enumerate lists ids with sql, in a savepoint; a failing query is
// counted as one failed dashboard of typ and yields none.
func (q *queries) enumerate(ctx context.Context, typ string, sqls []string) ([]int64, error) {
	var out []int64
	for _, sql := range sqls {
		var ids []int64
		err := q.savepoint(ctx, func() error {
			return q.scan(ctx, sql, nil, func(r pgx.Rows) error {
				var id int64
				err := r.Scan(&id)
				ids = append(ids, id)
				return err
			})
		})
		if err != nil {
			if q.wholeRound(ctx, err) {
				return nil, err
			}
			q.b.fail(typ, nil, err)
			continue
		}
		out = append(out, ids...)
	}
	return union(out), nil
}

// allUsers lists every user with guarantees or marked attendance.
func (q *queries) allUsers(ctx context.Context) ([]int64, error) {
	var sqls []string
	for _, t := range []struct {
		quoted string
		c      cols
	}{{q.b.guarantee, q.g}, {q.b.attendance, q.a}} {
		if col := quoteCol(t.c.owner); t.quoted != "" && col != "" {
			sqls = append(sqls, `SELECT DISTINCT `+col+` FROM `+t.quoted+` WHERE `+col+` IS NOT NULL`)
		}
	}
	return q.enumerate(ctx, schema.DashboardPersonal, sqls)
}

// allCommittees lists every committee: from the committee table when it
// exists, else those with rows.
func (q *queries) allCommittees(ctx context.Context) ([]int64, error) {
	type src struct{ quoted, col string }
	tables := []src{{q.b.guarantee, q.g.committee}, {q.b.attendance, q.a.committee}, {q.b.voteCount, q.v.committee}}
	if q.hasCommittee {
		tables = []src{{q.b.commit, "id"}}
	}
	var sqls []string
	for _, t := range tables {
		if col := quoteCol(t.col); t.quoted != "" && col != "" {
			sqls = append(sqls, `SELECT DISTINCT `+col+` FROM `+t.quoted+` WHERE `+col+` IS NOT NULL`)
		}
	}
	return q.enumerate(ctx, schema.DashboardSupervisor, sqls)
}

// messages encodes the computed dashboards of ids, in id order; ids that
// failed (absent from data) are left out.
func messages[T any](q *queries, typ string, ids []int64, data map[int64]*T, at string) []schema.Message {
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]schema.Message, 0, len(data))
	for _, id := range ids {
		d, ok := data[id]
		if !ok {
			continue
		}
		m, err := message(typ, id, d, at)
		if err != nil {
			q.b.fail(typ, []int64{id}, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// countsBy counts, for each of ids by column (user_id or committee_id),
// the guarantees by status and the attendances marked, into the counters
// of the id that of returns (nil: an id not asked for). A table that is
// not tracked counts nothing.
func (q *queries) countsBy(ctx context.Context, by string, ids []int64, of func(id int64) (*Guarantees, *int64)) error {
	args := []any{ids}
	if t, column, status := q.b.guarantee, quoteCol(q.g.by(by)), quoteCol(q.g.value); t != "" && column != "" && status != "" {
		err := q.scan(ctx, `SELECT `+column+`, `+status+`::text, count(*) FROM `+t+` WHERE `+column+` = ANY($1) GROUP BY 1, 2`, args, func(r pgx.Rows) error {
			var id, n int64
			var s *string
			err := r.Scan(&id, &s, &n)
			if g, _ := of(id); g != nil && err == nil {
				g.add(q.b.status(s), n)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	if t, column, attended := q.b.attendance, quoteCol(q.a.by(by)), quoteCol(q.a.value); t != "" && column != "" && attended != "" {
		return q.scan(ctx, `SELECT `+column+`, count(*) FROM `+t+` WHERE `+column+` = ANY($1) AND `+attended+` GROUP BY 1`, args, func(r pgx.Rows) error {
			var id, n int64
			err := r.Scan(&id, &n)
			if _, a := of(id); a != nil && err == nil {
				*a = n
			}
			return err
		})
	}
	return nil
}

func (q *queries) personal(ctx context.Context, users []int64, at string) ([]schema.Message, error) {
	data, err := isolate(ctx, q, schema.DashboardPersonal, users, func(users []int64) (map[int64]*Personal, error) {
		data := make(map[int64]*Personal, len(users))
		for _, u := range users {
			data[u] = &Personal{Guarantees: q.guarantees(byOwner), AttendanceMarked: q.attended(byOwner)}
		}
		err := q.countsBy(ctx, byOwner, users, func(u int64) (*Guarantees, *int64) {
			if p := data[u]; p != nil {
				return p.Guarantees, p.AttendanceMarked
			}
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return messages(q, schema.DashboardPersonal, users, data, at), nil
}

func (q *queries) supervisor(ctx context.Context, committees []int64, at string) ([]schema.Message, error) {
	data, err := isolate(ctx, q, schema.DashboardSupervisor, committees, func(committees []int64) (map[int64]*Supervisor, error) {
		data := make(map[int64]*Supervisor, len(committees))
		for _, c := range committees {
			data[c] = &Supervisor{Guarantees: q.guarantees(byCommittee), Attendance: Attendance{Attended: q.attended(byCommittee)}}
			if q.votesOK(byCommittee) {
				data[c].Votes, data[c].TotalVotes = []Votes{}, new(int64)
			}
		}
		args := []any{committees}
		err := q.countsBy(ctx, byCommittee, committees, func(c int64) (*Guarantees, *int64) {
			if d := data[c]; d != nil {
				return d.Guarantees, d.Attendance.Attended
			}
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		if q.hasElectors {
			err := q.scan(ctx, `SELECT id, `+quoteCol(q.b.electorsCol)+`::bigint FROM `+q.b.commit+` WHERE id = ANY($1)`, args, func(r pgx.Rows) error {
				var c int64
				var n *int64
				err := r.Scan(&c, &n)
				if d := data[c]; d != nil && err == nil {
					d.Attendance.Electors = n
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		if t := q.b.voteCount; t != "" && q.votesOK(byCommittee) {
			err := q.scan(ctx, `SELECT `+quoteCol(q.v.committee)+`, candidate_id, coalesce(`+quoteCol(q.v.value)+`, 0)::bigint FROM `+t+`
				WHERE `+quoteCol(q.v.committee)+` = ANY($1) AND candidate_id IS NOT NULL ORDER BY 1, 2`, args, func(r pgx.Rows) error {
				var c, cand, n int64
				err := r.Scan(&c, &cand, &n)
				if d := data[c]; d != nil && err == nil {
					d.Votes = append(d.Votes, Votes{CandidateID: cand, Votes: n})
					*d.TotalVotes += n
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return messages(q, schema.DashboardSupervisor, committees, data, at), nil
}

// admin computes the election-wide dashboard; ok is false when its
// queries failed (counted and logged).
func (q *queries) admin(ctx context.Context, at string) (m schema.Message, ok bool, err error) {
	data, err := isolate(ctx, q, schema.DashboardAdmin, []int64{0}, func([]int64) (map[int64]*Admin, error) {
		d := &Admin{Supervisor: Supervisor{Guarantees: q.guarantees(""), Attendance: Attendance{Attended: q.attended("")}}}
		if q.votesOK("") {
			d.Votes, d.TotalVotes = []Votes{}, new(int64)
		}
		if t := q.b.guarantee; t != "" && q.g.value != "" {
			err := q.scan(ctx, `SELECT `+quoteCol(q.g.value)+`::text, count(*) FROM `+t+` GROUP BY 1`, nil, func(r pgx.Rows) error {
				var s *string
				var n int64
				err := r.Scan(&s, &n)
				if err == nil {
					d.Guarantees.add(q.b.status(s), n)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		if t := q.b.attendance; t != "" && q.a.value != "" {
			if err := q.tx.QueryRow(ctx, `SELECT count(*) FROM `+t+` WHERE `+quoteCol(q.a.value)).Scan(d.Attendance.Attended); err != nil {
				return nil, fmt.Errorf("count attendance: %w", err)
			}
		}
		if q.hasCommittee {
			electors := "NULL"
			if q.hasElectors {
				electors = "coalesce(sum(" + quoteCol(q.b.electorsCol) + "), 0)::bigint"
			}
			if err := q.tx.QueryRow(ctx, `SELECT `+electors+`, count(*) FROM `+q.b.commit).Scan(&d.Attendance.Electors, &d.Committees); err != nil {
				return nil, fmt.Errorf("count electors: %w", err)
			}
		}
		if t := q.b.voteCount; t != "" && q.votesOK("") {
			err := q.scan(ctx, `SELECT candidate_id, coalesce(sum(`+quoteCol(q.v.value)+`), 0)::bigint FROM `+t+`
				WHERE candidate_id IS NOT NULL GROUP BY 1 ORDER BY 1`, nil, func(r pgx.Rows) error {
				var v Votes
				err := r.Scan(&v.CandidateID, &v.Votes)
				d.Votes = append(d.Votes, v)
				*d.TotalVotes += v.Votes
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		return map[int64]*Admin{0: d}, nil
	})
	if err != nil {
		return schema.Message{}, false, err
	}
	ms := messages(q, schema.DashboardAdmin, []int64{0}, data, at)
	if len(ms) == 0 {
		return schema.Message{}, false, nil
	}
	return ms[0], true, nil
}

// quoteCol quotes a column name for SQL; "" stays "".
func quoteCol(c string) string {
	if c == "" {
		return ""
	}
	return schema.QuoteIdent(c)
}

// guarantees returns the counters of a dashboard's guarantees: nil (null)
// when the guarantee table is tracked but lacks the status column or the
// column by (byOwner, byCommittee; "" for the admin dashboard).
func (q *queries) guarantees(by string) *Guarantees {
	if q.b.guarantee != "" && (q.g.value == "" || by != "" && q.g.by(by) == "") {
		return nil
	}
	return &Guarantees{}
}

// attended is guarantees' rule for the attendance counter.
func (q *queries) attended(by string) *int64 {
	if q.b.attendance != "" && (q.a.value == "" || by != "" && q.a.by(by) == "") {
		return nil
	}
	return new(int64)
}

// votesOK reports whether the votes can be summed (by committee, or
// election-wide for by ""); an untracked vote_count table sums to none.
func (q *queries) votesOK(by string) bool {
	return q.b.voteCount == "" || q.v.value != "" && (by == "" || q.v.by(by) != "")
}
