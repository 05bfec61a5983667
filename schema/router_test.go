package schema

import (
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
)

func TestParseTables(t *testing.T) {
	cases := []struct {
		spec string
		want string // "schema.name=kind" joined by spaces
		err  string
	}{
		{DefaultTables, "public.guarantee=guarantee public.attendance=attendance public.vote_count=vote_count public.election_results=election_results", ""},
		{"guarantees_guarantee=guarantee, voting_votecount=vote_count", "public.guarantees_guarantee=guarantee public.voting_votecount=vote_count", ""},
		{"election.guarantee", "election.guarantee=guarantee", ""},
		{"election.g=attendance", "election.g=attendance", ""},
		{"ballots", "", `unknown kind "ballots"`},
		{"x=ballot", "", `unknown kind "ballot"`},
		{"guarantee,guarantee", "", "listed twice"},
		{" , ", "", "no tables"},
		{"=guarantee", "", "empty name"},
	}
	for _, c := range cases {
		got, err := ParseTables(c.spec)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseTables(%q) error = %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTables(%q): %v", c.spec, err)
			continue
		}
		var parts []string
		for _, tb := range got {
			parts = append(parts, tb.Qualified()+"="+string(tb.Kind))
		}
		if s := strings.Join(parts, " "); s != c.want {
			t.Errorf("ParseTables(%q) = %s, want %s", c.spec, s, c.want)
		}
	}
}

func TestQuoteIdent(t *testing.T) {
	for in, want := range map[string]string{
		"walcast": "walcast", "guarantee_2": "guarantee_2", "Mixed": `"Mixed"`,
		"user": `"user"`, "2fast": `"2fast"`, `we"ird`: `"we""ird"`, "": `""`,
	} {
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPositionOrderAndText(t *testing.T) {
	a := Position{LSN: 100, Seq: 2}
	b := Position{LSN: 100, Seq: 10}
	c := Position{LSN: 101, Seq: 0}
	if !a.Less(b) || !b.Less(c) || c.Less(a) || a.Less(a) {
		t.Error("positions are not ordered by LSN, then ordinal")
	}
	p, err := ParsePosition(b.String())
	if err != nil || p != b {
		t.Errorf("round trip of %s: %v %v", b, p, err)
	}
	for _, bad := range []string{"", "12", "-1", "1-", "a-1", "1-b", "1-2-3", "99999999999999999999-1"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) accepted", bad)
		}
	}
}

func col(name, json string) Column { return Column{Name: name, Value: []byte(json)} }

func TestRouteShapesAndScope(t *testing.T) {
	r := NewRouter(mustTables(t, "guarantee,attendance,vote_count,election_results,public.g2=guarantee"))
	tx := &Tx{CommitLSN: 42, CommitTime: time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)}
	cases := []struct {
		name         string
		ch           Change
		want         string
		committee    int64
		hasCommittee bool
		owner        int64
		hasOwner     bool
	}{
		{
			name: "guarantee update with old values",
			ch: Change{Schema: "public", Table: "guarantee", Op: Update, Pos: Position{42, 0},
				New: Row{col("id", "7"), col("committee_id", "3"), col("user_id", "12"), col("status", `"strong"`)},
				Old: Row{col("id", "7"), col("committee_id", "3"), col("user_id", "12"), col("status", `"medium"`)}, OldFull: true},
			want:      `{"id":"42-0","type":"guarantee_update","action":"updated","table":"public.guarantee","data":{"id":7,"committee_id":3,"user_id":12,"status":"strong"},"old":{"status":"medium"},"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
			committee: 3, hasCommittee: true, owner: 12, hasOwner: true,
		},
		{
			name: "delete sends the old row",
			ch: Change{Schema: "public", Table: "attendance", Op: Delete, Pos: Position{42, 1},
				Old: Row{col("id", "5"), col("committee_id", "2")}, OldFull: true},
			want:      `{"id":"42-1","type":"attendance_update","action":"deleted","table":"public.attendance","data":{"id":5,"committee_id":2},"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
			committee: 2, hasCommittee: true,
		},
		{
			name: "vote count",
			ch: Change{Schema: "public", Table: "vote_count", Op: Insert, Pos: Position{42, 2},
				New: Row{col("id", "9"), col("committee_id", "1"), col("votes", "40")}},
			want:      `{"id":"42-2","type":"voting_update","action":"created","table":"public.vote_count","data":{"vote_count":{"id":9,"committee_id":1,"votes":40},"committee_id":1},"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
			committee: 1, hasCommittee: true,
		},
		{
			name: "election-wide results have no scope",
			ch: Change{Schema: "public", Table: "election_results", Op: Insert, Pos: Position{42, 3},
				New: Row{col("id", "1"), col("committee_id", "null")}},
			want: `{"id":"42-3","type":"voting_update","action":"created","table":"public.election_results","data":{"election_results":{"id":1,"committee_id":null},"action_type":"results_generated","committee_id":null},"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
		},
		{
			name: "renamed table, unchanged toast, oversized",
			ch: Change{Schema: "public", Table: "g2", Op: Update, Pos: Position{42, 4},
				New: Row{col("id", "1")}, Unchanged: []string{"notes"}, Oversized: true, Omitted: []string{"blob"}},
			want: `{"id":"42-4","type":"guarantee_update","action":"updated","table":"public.g2","data":{"id":1},"unchanged":["notes"],"oversized":true,"omitted":["blob"],"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
		},
		{
			name: "truncate",
			ch:   Change{Schema: "public", Table: "guarantee", Op: Truncate, Pos: Position{42, 5}},
			want: `{"id":"42-5","type":"guarantee_update","action":"truncated","table":"public.guarantee","data":{},"version":"42","timestamp":"2026-11-25T12:00:00.123456Z"}`,
		},
	}
	for _, c := range cases {
		m, ok := r.Route(tx, &c.ch)
		if !ok {
			t.Errorf("%s: not routed", c.name)
			continue
		}
		if string(m.JSON) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, m.JSON, c.want)
		}
		if m.Committee != c.committee || m.HasCommittee != c.hasCommittee || m.Owner != c.owner || m.HasOwner != c.hasOwner {
			t.Errorf("%s: scope committee=%d,%v owner=%d,%v", c.name, m.Committee, m.HasCommittee, m.Owner, m.HasOwner)
		}
	}
	if _, ok := r.Route(tx, &Change{Schema: "public", Table: "audit"}); ok {
		t.Error("an untracked table was routed")
	}
}

func mustTables(t testing.TB, spec string) []Table {
	t.Helper()
	tb, err := ParseTables(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func BenchmarkRoute(b *testing.B) {
	r := NewRouter(mustTables(&testing.T{}, DefaultTables))
	tx := &Tx{CommitLSN: 42, CommitTime: time.Now()}
	ch := Change{Schema: "public", Table: "guarantee", Op: Update, Pos: Position{42, 0},
		New: Row{col("id", "7"), col("committee_id", "3"), col("user_id", "12"), col("elector_name", `"Some Body"`), col("status", `"strong"`), col("notes", `""`), col("created_at", `"2026-11-25T12:00:00.123456Z"`), col("updated_at", `"2026-11-25T12:00:00.123456Z"`)},
		Old: Row{col("id", "7"), col("committee_id", "3"), col("user_id", "12"), col("elector_name", `"Some Body"`), col("status", `"medium"`), col("notes", `""`), col("created_at", `"2026-11-25T12:00:00.123456Z"`), col("updated_at", `"2026-11-25T12:00:00.123456Z"`)}, OldFull: true}
	// As the decoder delivers them: names pre-encoded as keys.
	for _, row := range []Row{ch.New, ch.Old} {
		for i := range row {
			row[i].Key = append(jsonx.AppendString(nil, row[i].Name), ':')
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Route(tx, &ch)
	}
}
