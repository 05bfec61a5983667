package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/schema"
)

// The aggregate queries. Each is served by an index of schema/election.sql:
// guarantee (user_id, status) and (committee_id, status), attendance
// (user_id) and (committee_id, elector_id), vote_count (committee_id,
// candidate_id). Column names are the election schema's: guarantee.status,
// attendance.attended, vote_count.votes, committee.electors_count.

// queries runs one round's queries in one read-only snapshot.
type queries struct {
	b            *Builder
	tx           pgx.Tx
	hasCommittee bool
}

func (q *queries) prepare(ctx context.Context) error {
	if err := q.tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, q.b.commit).Scan(&q.hasCommittee); err != nil {
		return fmt.Errorf("look up %s: %w", q.b.commit, err)
	}
	return nil
}

// Guarantees counts guarantees by status; Total is their sum.
type Guarantees struct {
	Strong int64 `json:"strong"`
	Medium int64 `json:"medium"`
	Weak   int64 `json:"weak"`
	// Other counts statuses other than the three above, by name.
	Other map[string]int64 `json:"other,omitempty"`
	Total int64            `json:"total"`
}

func (g *Guarantees) add(status string, n int64) {
	switch status {
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
		g.Other[status] += n
	}
	g.Total += n
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

// allUsers lists every user with guarantees or marked attendance.
func (q *queries) allUsers(ctx context.Context) ([]int64, error) {
	var out []int64
	for _, t := range []string{q.b.guarantee, q.b.attendance} {
		if t == "" {
			continue
		}
		err := q.scan(ctx, `SELECT DISTINCT user_id FROM `+t, nil, func(r pgx.Rows) error {
			var id int64
			err := r.Scan(&id)
			out = append(out, id)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return union(out), nil
}

// allCommittees lists every committee: from the committee table when it
// exists, else those with rows.
func (q *queries) allCommittees(ctx context.Context) ([]int64, error) {
	var out []int64
	tables := []string{q.b.guarantee, q.b.attendance, q.b.voteCount}
	col := "committee_id"
	if q.hasCommittee {
		tables, col = []string{q.b.commit}, "id"
	}
	for _, t := range tables {
		if t == "" {
			continue
		}
		err := q.scan(ctx, `SELECT DISTINCT `+col+` FROM `+t+` WHERE `+col+` IS NOT NULL`, nil, func(r pgx.Rows) error {
			var id int64
			err := r.Scan(&id)
			out = append(out, id)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return union(out), nil
}

func (q *queries) personal(ctx context.Context, users []int64, at string) ([]schema.Message, error) {
	data := make(map[int64]*Personal, len(users))
	for _, u := range users {
		data[u] = &Personal{}
	}
	if t := q.b.guarantee; t != "" {
		err := q.scan(ctx, `SELECT user_id, status::text, count(*) FROM `+t+` WHERE user_id = ANY($1) GROUP BY 1, 2`, []any{users}, func(r pgx.Rows) error {
			var u, n int64
			var s string
			err := r.Scan(&u, &s, &n)
			if p := data[u]; p != nil {
				p.Guarantees.add(s, n)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if t := q.b.attendance; t != "" {
		err := q.scan(ctx, `SELECT user_id, count(*) FROM `+t+` WHERE user_id = ANY($1) AND attended GROUP BY 1`, []any{users}, func(r pgx.Rows) error {
			var u, n int64
			err := r.Scan(&u, &n)
			if p := data[u]; p != nil {
				p.AttendanceMarked = n
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(users, func(i, j int) bool { return users[i] < users[j] })
	out := make([]schema.Message, 0, len(users))
	for _, u := range users {
		m, err := message(schema.DashboardPersonal, u, data[u], at)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (q *queries) supervisor(ctx context.Context, committees []int64, at string) ([]schema.Message, error) {
	data := make(map[int64]*Supervisor, len(committees))
	for _, c := range committees {
		data[c] = &Supervisor{Votes: []Votes{}}
	}
	args := []any{committees}
	if t := q.b.guarantee; t != "" {
		err := q.scan(ctx, `SELECT committee_id, status::text, count(*) FROM `+t+` WHERE committee_id = ANY($1) GROUP BY 1, 2`, args, func(r pgx.Rows) error {
			var c, n int64
			var s string
			err := r.Scan(&c, &s, &n)
			if d := data[c]; d != nil {
				d.Guarantees.add(s, n)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if t := q.b.attendance; t != "" {
		err := q.scan(ctx, `SELECT committee_id, count(*) FROM `+t+` WHERE committee_id = ANY($1) AND attended GROUP BY 1`, args, func(r pgx.Rows) error {
			var c, n int64
			err := r.Scan(&c, &n)
			if d := data[c]; d != nil {
				d.Attendance.Attended = n
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if q.hasCommittee {
		err := q.scan(ctx, `SELECT id, electors_count::bigint FROM `+q.b.commit+` WHERE id = ANY($1)`, args, func(r pgx.Rows) error {
			var c, n int64
			err := r.Scan(&c, &n)
			if d := data[c]; d != nil {
				d.Attendance.Electors = &n
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if t := q.b.voteCount; t != "" {
		err := q.scan(ctx, `SELECT committee_id, candidate_id, votes::bigint FROM `+t+` WHERE committee_id = ANY($1) ORDER BY 1, 2`, args, func(r pgx.Rows) error {
			var c, cand, n int64
			err := r.Scan(&c, &cand, &n)
			if d := data[c]; d != nil {
				d.Votes = append(d.Votes, Votes{CandidateID: cand, Votes: n})
				d.TotalVotes += n
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(committees, func(i, j int) bool { return committees[i] < committees[j] })
	out := make([]schema.Message, 0, len(committees))
	for _, c := range committees {
		m, err := message(schema.DashboardSupervisor, c, data[c], at)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (q *queries) admin(ctx context.Context, at string) (schema.Message, error) {
	d := &Admin{Supervisor: Supervisor{Votes: []Votes{}}}
	if t := q.b.guarantee; t != "" {
		err := q.scan(ctx, `SELECT status::text, count(*) FROM `+t+` GROUP BY 1`, nil, func(r pgx.Rows) error {
			var s string
			var n int64
			err := r.Scan(&s, &n)
			d.Guarantees.add(s, n)
			return err
		})
		if err != nil {
			return schema.Message{}, err
		}
	}
	if t := q.b.attendance; t != "" {
		if err := q.tx.QueryRow(ctx, `SELECT count(*) FROM `+t+` WHERE attended`).Scan(&d.Attendance.Attended); err != nil {
			return schema.Message{}, fmt.Errorf("count attendance: %w", err)
		}
	}
	if q.hasCommittee {
		var electors int64
		if err := q.tx.QueryRow(ctx, `SELECT coalesce(sum(electors_count), 0)::bigint, count(*) FROM `+q.b.commit).Scan(&electors, &d.Committees); err != nil {
			return schema.Message{}, fmt.Errorf("count electors: %w", err)
		}
		d.Attendance.Electors = &electors
	}
	if t := q.b.voteCount; t != "" {
		err := q.scan(ctx, `SELECT candidate_id, sum(votes)::bigint FROM `+t+` GROUP BY 1 ORDER BY 1`, nil, func(r pgx.Rows) error {
			var v Votes
			err := r.Scan(&v.CandidateID, &v.Votes)
			d.Votes = append(d.Votes, v)
			d.TotalVotes += v.Votes
			return err
		})
		if err != nil {
			return schema.Message{}, err
		}
	}
	return message(schema.DashboardAdmin, 0, d, at)
}
