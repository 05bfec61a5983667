package schema

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// Changes of a table with a primary key carry their row: the key in the
// frame and in Row, the frame's data as Row.Data, the old key of a row
// whose key changed; TRUNCATE clears; a table without a key has none.
func TestRouteRowIdentity(t *testing.T) {
	r := NewRouter(mustTables(t, "guarantee,vote_count,attendance"))
	r.SetKeys(map[string][]string{"public.guarantee": {"id"}, "public.vote_count": {"committee_id", "id"}})
	tx := &Tx{CommitLSN: 42, CommitTime: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	cases := []struct {
		name string
		ch   Change
		want *RowRef
		key  string // the frame's "key" and "old_key" text
	}{
		{"insert", Change{Schema: "public", Table: "guarantee", Op: Insert, New: Row{col("id", "7"), col("notes", `"x"`)}},
			&RowRef{Table: "public.guarantee", Key: "[7]", Op: RowUpsert, Data: []byte(`{"id":7,"notes":"x"}`)}, `"key":"[7]"`},
		{"key changed", Change{Schema: "public", Table: "guarantee", Op: Update, New: Row{col("id", "8")}, Old: Row{col("id", "7")}, Unchanged: []string{"notes"}},
			&RowRef{Table: "public.guarantee", Key: "[8]", OldKey: "[7]", Op: RowUpsert, Data: []byte(`{"id":8}`), Unchanged: []string{"notes"}}, `"key":"[8]","old_key":"[7]"`},
		{"delete", Change{Schema: "public", Table: "guarantee", Op: Delete, Old: Row{col("id", "7")}},
			&RowRef{Table: "public.guarantee", Key: "[7]", Op: RowDelete}, `"key":"[7]"`},
		{"composite key, wrapped data", Change{Schema: "public", Table: "vote_count", Op: Insert, New: Row{col("id", "9"), col("committee_id", "1")}},
			&RowRef{Table: "public.vote_count", Key: "[1,9]", Op: RowUpsert, Data: []byte(`{"vote_count":{"id":9,"committee_id":1},"committee_id":1}`)}, `"key":"[1,9]"`},
		{"truncate", Change{Schema: "public", Table: "guarantee", Op: Truncate}, &RowRef{Table: "public.guarantee", Op: RowClear}, ""},
		{"no primary key", Change{Schema: "public", Table: "attendance", Op: Insert, New: Row{col("id", "1")}}, nil, ""},
		{"key column not published", Change{Schema: "public", Table: "guarantee", Op: Insert, New: Row{col("notes", "1")}}, nil, ""},
	}
	if !r.Keyed("public.vote_count") || r.Keyed("public.attendance") {
		t.Errorf("Keyed: vote_count %v, attendance %v; want true, false", r.Keyed("public.vote_count"), r.Keyed("public.attendance"))
	}
	for _, c := range cases {
		m, _ := r.Route(tx, &c.ch)
		if got := m.Row; (got == nil) != (c.want == nil) || got != nil && (got.Table != c.want.Table || got.Key != c.want.Key ||
			got.OldKey != c.want.OldKey || got.Op != c.want.Op || string(got.Data) != string(c.want.Data) || len(got.Unchanged) != len(c.want.Unchanged)) {
			t.Errorf("%s: Row = %+v, want %+v", c.name, got, c.want)
		}
		if c.key != "" && !contains(string(m.JSON), `"table":"`+c.want.Table+`",`+c.key+`,"data":`) {
			t.Errorf("%s: frame %s lacks %s after table", c.name, m.JSON, c.key)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// MergeUnchanged keeps the stored values of columns a change did not
// carry, at the top level or inside a voting_update's wrapped row, and
// is not fooled by names inside strings or nested values.
func TestMergeUnchanged(t *testing.T) {
	cases := []struct{ prev, next, want string }{
		{`{"id":1,"notes":"big \"one\", {x}","n":1}`, `{"id":1,"n":2}`, `{"id":1,"n":2,"notes":"big \"one\", {x}"}`},
		{`{"id":1,"j":{"notes":1},"notes":[1,{"a":"]"}]}`, `{"id":1}`, `{"id":1,"notes":[1,{"a":"]"}]}`},
		{`{"id":1}`, `{"id":1}`, `{"id":1}`}, // prev lacks it: stays missing
		{`{"id":1,"notes":"a"}`, `{}`, `{"notes":"a"}`},
		{`{"vote_count":{"id":9,"notes":"a"},"committee_id":1}`, `{"vote_count":{"id":9},"committee_id":2}`,
			`{"vote_count":{"id":9,"notes":"a"},"committee_id":2}`},
		{`{"s":"notes","notes":null}`, `{"s":"x"}`, `{"s":"x","notes":null}`},
	}
	for _, c := range cases {
		if got := string(MergeUnchanged([]byte(c.prev), []byte(c.next), []string{"notes"})); got != c.want {
			t.Errorf("MergeUnchanged(%s, %s) = %s, want %s", c.prev, c.next, got, c.want)
		}
	}
}

// FuzzMergeUnchanged: any bytes merge without a panic, and two compact
// JSON objects (what walcast writes) merge into valid JSON.
func FuzzMergeUnchanged(f *testing.F) {
	f.Add([]byte(`{"id":1,"notes":"a \"b\" {c}"}`), []byte(`{"id":1}`), "notes")
	f.Add([]byte(`{"vote_count":{"id":9,"notes":[1,{"a":"]"}]},"committee_id":1}`), []byte(`{"vote_count":{"id":9},"committee_id":2}`), "notes")
	f.Add([]byte(`{}`), []byte(`{}`), "x")
	f.Fuzz(func(t *testing.T, prev, next []byte, name string) {
		MergeUnchanged(prev, next, []string{name})
		var p, n bytes.Buffer
		if json.Compact(&p, prev) != nil || json.Compact(&n, next) != nil || !bytes.HasPrefix(p.Bytes(), []byte("{")) || !bytes.HasPrefix(n.Bytes(), []byte("{")) {
			return
		}
		if out := MergeUnchanged(p.Bytes(), n.Bytes(), []string{name}); !json.Valid(out) {
			t.Fatalf("MergeUnchanged(%s, %s, %q) = %s: not JSON", p.Bytes(), n.Bytes(), name, out)
		}
	})
}

// An UPDATE that moves its row to another committee or owner (the old row
// whole, REPLICA IDENTITY FULL) carries the old scope and the frame the
// connections it left receive; one that keeps the scope, or whose old row
// is not whole, carries none.
func TestRouteRowLeavingItsScope(t *testing.T) {
	r := NewRouter(mustTables(t, "guarantee"))
	r.SetKeys(map[string][]string{"public.guarantee": {"id"}})
	tx := &Tx{CommitLSN: 42, CommitTime: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	row := func(committee, user string) Row {
		return Row{col("id", "7"), col("committee_id", committee), col("user_id", user)}
	}
	moved := Change{Schema: "public", Table: "guarantee", Op: Update, Pos: Position{42, 1}, New: row("2", "12"), Old: row("3", "12"), OldFull: true}
	m, _ := r.Route(tx, &moved)
	if m.Left == nil || *m.Left != (Scope{Committee: 3, HasCommittee: true, Owner: 12, HasOwner: true}) {
		t.Fatalf("Left = %+v, want committee 3, owner 12", m.Left)
	}
	want := `{"id":"42-1","type":"guarantee_update","action":"deleted","table":"public.guarantee","key":"[7]","data":{"id":7,"committee_id":3,"user_id":12},"left":true,"version":"42","timestamp":"2026-11-25T12:00:00.000000Z"}`
	if string(m.LeftJSON) != want {
		t.Errorf("LeftJSON:\n got %s\nwant %s", m.LeftJSON, want)
	}
	for name, ch := range map[string]Change{
		"same scope":   {Schema: "public", Table: "guarantee", Op: Update, New: row("3", "12"), Old: row("3", "12"), OldFull: true},
		"key identity": {Schema: "public", Table: "guarantee", Op: Update, New: row("2", "12"), Old: Row{col("id", "7")}},
	} {
		if m, _ := r.Route(tx, &ch); m.Left != nil || m.LeftJSON != nil {
			t.Errorf("%s: Left = %+v", name, m.Left)
		}
	}
}
