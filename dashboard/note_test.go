package dashboard

import (
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/walcast/walcast/schema"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestBuilder returns a builder of the default tables on dbURL.
func newTestBuilder(t testing.TB, dbURL string) *Builder {
	t.Helper()
	tables, err := schema.ParseTables(schema.DefaultTables)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{DatabaseURL: dbURL, Tables: tables, Logger: discard()})
}

// row returns a row with the given committee and owner (0: absent).
func row(committee, owner int64) schema.Row {
	var r schema.Row
	if committee != 0 {
		r = append(r, schema.Column{Name: schema.CommitteeColumn, Value: []byte(strconv.FormatInt(committee, 10))})
	}
	if owner != 0 {
		r = append(r, schema.Column{Name: schema.OwnerColumn, Value: []byte(strconv.FormatInt(owner, 10))})
	}
	return r
}

// change is a change of table in the public schema.
func change(table string, op schema.Op, newRow, oldRow schema.Row) schema.Change {
	return schema.Change{Schema: "public", Table: table, Op: op, New: newRow, Old: oldRow}
}

// dirtyOf describes a dirty set: the dashboards it names, sorted.
func dirtyOf(d dirtySet) []string {
	var out []string
	if d.admin {
		out = append(out, "admin")
	}
	if d.allUsers {
		out = append(out, "all users")
	}
	if d.allCommittees {
		out = append(out, "all committees")
	}
	for _, c := range keys(d.committees) {
		out = append(out, schema.DashboardKey(schema.DashboardSupervisor, c))
	}
	for _, u := range keys(d.users) {
		out = append(out, schema.DashboardKey(schema.DashboardPersonal, u))
	}
	slices.Sort(out)
	return out
}

// Which dashboards a change marks: the admin one, its committee's and,
// except for vote counts, its user's, for both the new and the old row;
// every dashboard of a kind for a TRUNCATE or an unscoped change; none
// for a table dashboards do not aggregate.
func TestNoteMarksTheScopesAChangeTouches(t *testing.T) {
	unscoped := change("guarantee", schema.Delete, nil, nil)
	unscoped.Unscoped = true
	for _, tc := range []struct {
		name string
		ch   schema.Change
		want []string
	}{
		{"guarantee insert", change("guarantee", schema.Insert, row(1, 10), nil), []string{"admin", "personal:10", "supervisor:1"}},
		{"guarantee moved", change("guarantee", schema.Update, row(2, 20), row(1, 10)),
			[]string{"admin", "personal:10", "personal:20", "supervisor:1", "supervisor:2"}},
		{"attendance delete", change("attendance", schema.Delete, nil, row(3, 30)), []string{"admin", "personal:30", "supervisor:3"}},
		{"vote count names no user", change("vote_count", schema.Update, row(4, 40), nil), []string{"admin", "supervisor:4"}},
		{"null ids name nobody", change("guarantee", schema.Insert, schema.Row{{Name: schema.CommitteeColumn, Value: []byte("null")}}, nil), []string{"admin"}},
		{"truncate", change("guarantee", schema.Truncate, nil, nil), []string{"admin", "all committees", "all users"}},
		{"vote count truncate", change("vote_count", schema.Truncate, nil, nil), []string{"admin", "all committees"}},
		{"unscoped delete", unscoped, []string{"admin", "all committees", "all users"}},
		{"results feed no dashboard", change("election_results", schema.Insert, row(5, 50), nil), nil},
		{"untracked table", change("other", schema.Insert, row(6, 60), nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBuilder(t, "postgres://unused")
			b.Note(&schema.Tx{Xid: 7, Changes: []schema.Change{tc.ch}})
			d := b.take()
			if got := dirtyOf(d); !slices.Equal(got, tc.want) {
				t.Errorf("marked %v, want %v", got, tc.want)
			}
			if tc.want != nil && !d.xids[7] {
				t.Errorf("the transaction is not among those the round must see: %v", d.xids)
			}
		})
	}
}

// Changes noted before a round coalesce into one dirty set, and a set
// given back after a failed round merges with what came meanwhile.
func TestNotesCoalesceUntilTheRoundTakesThem(t *testing.T) {
	b := newTestBuilder(t, "postgres://unused")
	b.Note(&schema.Tx{Xid: 1, Changes: []schema.Change{change("guarantee", schema.Insert, row(1, 10), nil)}})
	b.Note(&schema.Tx{Xid: 2, Changes: []schema.Change{change("attendance", schema.Insert, row(1, 11), nil)}})
	b.Note(&schema.Tx{Xid: 3, Changes: []schema.Change{change("vote_count", schema.Insert, row(2, 0), nil)}})
	if len(b.wake) != 1 {
		t.Fatalf("%d wake-ups queued, want 1 for the round", len(b.wake))
	}
	<-b.wake
	d := b.take()
	want := []string{"admin", "personal:10", "personal:11", "supervisor:1", "supervisor:2"}
	if got := dirtyOf(d); !slices.Equal(got, want) || len(d.xids) != 3 {
		t.Fatalf("one round takes %v (xids %v), want %v and 3 transactions", got, d.xids, want)
	}
	if rest := b.take(); !rest.empty() {
		t.Fatal("the dirty set was not cleared")
	}
	b.Note(&schema.Tx{Xid: 4, Changes: []schema.Change{change("guarantee", schema.Insert, row(3, 30), nil)}})
	b.giveBack(d)
	want = []string{"admin", "personal:10", "personal:11", "personal:30", "supervisor:1", "supervisor:2", "supervisor:3"}
	if got := dirtyOf(b.take()); !slices.Equal(got, want) {
		t.Fatalf("after a failed round: %v, want %v", got, want)
	}
}
