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
	hasCommittee bool
}

func (q *queries) prepare(ctx context.Context) error {
	if err := q.tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, q.b.commit).Scan(&q.hasCommittee); err != nil {
		return fmt.Errorf("look up %s: %w", q.b.commit, err)
	}
	return nil
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
	Attended int64  `json:"attended"`
	Electors *int64 `json:"electors"` // null when the committee table is missing
}

// Votes is one candidate's votes.
type Votes struct {
	CandidateID int64 `json:"candidate_id"`
	Votes       int64 `json:"votes"`
}

// Personal is the data of a personal dashboard.
type Personal struct {
	Guarantees       Guarantees `json:"guarantees"`
	AttendanceMarked int64      `json:"attendance_marked"`
}

// Supervisor is the data of a committee's dashboard.
type Supervisor struct {
	Guarantees Guarantees `json:"guarantees"`
	Attendance Attendance `json:"attendance"`
	Votes      []Votes    `json:"votes"`
	TotalVotes int64      `json:"total_votes"`
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
	for _, t := range []string{q.b.guarantee, q.b.attendance} {
		if t != "" {
			sqls = append(sqls, `SELECT DISTINCT user_id FROM `+t+` WHERE user_id IS NOT NULL`)
		}
	}
	return q.enumerate(ctx, schema.DashboardPersonal, sqls)
}

// allCommittees lists every committee: from the committee table when it
// exists, else those with rows.
func (q *queries) allCommittees(ctx context.Context) ([]int64, error) {
	tables := []string{q.b.guarantee, q.b.attendance, q.b.voteCount}
	col := "committee_id"
	if q.hasCommittee {
		tables, col = []string{q.b.commit}, "id"
	}
	var sqls []string
	for _, t := range tables {
		if t != "" {
			sqls = append(sqls, `SELECT DISTINCT `+col+` FROM `+t+` WHERE `+col+` IS NOT NULL`)
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
func (q *queries) countsBy(ctx context.Context, column string, ids []int64, of func(id int64) (*Guarantees, *int64)) error {
	args := []any{ids}
	if t := q.b.guarantee; t != "" {
		err := q.scan(ctx, `SELECT `+column+`, status::text, count(*) FROM `+t+` WHERE `+column+` = ANY($1) GROUP BY 1, 2`, args, func(r pgx.Rows) error {
			var id, n int64
			var s *string
			err := r.Scan(&id, &s, &n)
			if g, _ := of(id); g != nil && err == nil {
				g.add(s, n)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	if t := q.b.attendance; t != "" {
		return q.scan(ctx, `SELECT `+column+`, count(*) FROM `+t+` WHERE `+column+` = ANY($1) AND attended GROUP BY 1`, args, func(r pgx.Rows) error {
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
			data[u] = &Personal{}
		}
		err := q.countsBy(ctx, schema.OwnerColumn, users, func(u int64) (*Guarantees, *int64) {
			if p := data[u]; p != nil {
				return &p.Guarantees, &p.AttendanceMarked
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
			data[c] = &Supervisor{Votes: []Votes{}}
		}
		args := []any{committees}
		err := q.countsBy(ctx, schema.CommitteeColumn, committees, func(c int64) (*Guarantees, *int64) {
			if d := data[c]; d != nil {
				return &d.Guarantees, &d.Attendance.Attended
			}
			return nil, nil
		})
		if err != nil {
			return nil, err
		}
		if q.hasCommittee {
			err := q.scan(ctx, `SELECT id, electors_count::bigint FROM `+q.b.commit+` WHERE id = ANY($1)`, args, func(r pgx.Rows) error {
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
		if t := q.b.voteCount; t != "" {
			err := q.scan(ctx, `SELECT committee_id, candidate_id, coalesce(votes, 0)::bigint FROM `+t+`
				WHERE committee_id = ANY($1) AND candidate_id IS NOT NULL ORDER BY 1, 2`, args, func(r pgx.Rows) error {
				var c, cand, n int64
				err := r.Scan(&c, &cand, &n)
				if d := data[c]; d != nil && err == nil {
					d.Votes = append(d.Votes, Votes{CandidateID: cand, Votes: n})
					d.TotalVotes += n
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
		d := &Admin{Supervisor: Supervisor{Votes: []Votes{}}}
		if t := q.b.guarantee; t != "" {
			err := q.scan(ctx, `SELECT status::text, count(*) FROM `+t+` GROUP BY 1`, nil, func(r pgx.Rows) error {
				var s *string
				var n int64
				err := r.Scan(&s, &n)
				if err == nil {
					d.Guarantees.add(s, n)
				}
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		if t := q.b.attendance; t != "" {
			if err := q.tx.QueryRow(ctx, `SELECT count(*) FROM `+t+` WHERE attended`).Scan(&d.Attendance.Attended); err != nil {
				return nil, fmt.Errorf("count attendance: %w", err)
			}
		}
		if q.hasCommittee {
			var electors int64
			if err := q.tx.QueryRow(ctx, `SELECT coalesce(sum(electors_count), 0)::bigint, count(*) FROM `+q.b.commit).Scan(&electors, &d.Committees); err != nil {
				return nil, fmt.Errorf("count electors: %w", err)
			}
			d.Attendance.Electors = &electors
		}
		if t := q.b.voteCount; t != "" {
			err := q.scan(ctx, `SELECT candidate_id, coalesce(sum(votes), 0)::bigint FROM `+t+`
				WHERE candidate_id IS NOT NULL GROUP BY 1 ORDER BY 1`, nil, func(r pgx.Rows) error {
				var v Votes
				err := r.Scan(&v.CandidateID, &v.Votes)
				d.Votes = append(d.Votes, v)
				d.TotalVotes += v.Votes
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
