package schema

import (
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
)

func TestParseID(t *testing.T) {
	good := map[string]int64{
		"0": 0, "3": 3, "-7": -7, "9007199254740993": 9007199254740993,
		"9223372036854775807": 9223372036854775807, "-9223372036854775808": -9223372036854775808,
	}
	for s, want := range good {
		if got, err := ParseID(s); err != nil || got != want {
			t.Errorf("ParseID(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-", "+3", "03", "-0", "00", "3.00", "3.0", "1e3", " 3", "3 ", "0x1f", "3_000",
		"9223372036854775808", "-9223372036854775809", "99999999999999999999", "abc", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "٣"} {
		if got, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %d, want an error", s, got)
		}
	}
}

// Every routing value that is present but not an exact integer sends the
// message to admins only, and says why; NULL keeps meaning "no scope".
func TestRouteFailsClosed(t *testing.T) {
	r := NewRouter(mustTables(t, "guarantee,election_results"))
	tx := &Tx{CommitLSN: 42, CommitTime: time.Unix(0, 0)}
	cases := []struct {
		committee, owner string // JSON, "" for absent
		adminOnly        bool
		reason           string
		hasCommittee     bool
		hasOwner         bool
	}{
		{`3`, `12`, false, "", true, true},
		{`"3"`, `"12"`, false, "", true, true}, // numeric(10,0), text digits
		{`null`, `null`, false, "", false, false},
		{``, ``, false, "", false, false},
		{`"3.00"`, `12`, true, UnroutableCommittee, false, true},
		{`"abc"`, `12`, true, UnroutableCommittee, false, true},
		{`"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, `null`, true, UnroutableCommittee, false, false},
		{`3.5`, ``, true, UnroutableCommittee, false, false},
		{`1e+20`, ``, true, UnroutableCommittee, false, false},
		{`"9223372036854775808"`, ``, true, UnroutableCommittee, false, false},
		{`""`, ``, true, UnroutableCommittee, false, false},
		{`"NaN"`, ``, true, UnroutableCommittee, false, false},
		{`3`, `"u-12"`, true, UnroutableOwner, true, false},
		{`[3]`, ``, true, UnroutableCommittee, false, false},
		{`true`, ``, true, UnroutableCommittee, false, false},
	}
	for _, c := range cases {
		row := Row{col("id", "1")}
		if c.committee != "" {
			row = append(row, col(CommitteeColumn, c.committee))
		}
		if c.owner != "" {
			row = append(row, col(OwnerColumn, c.owner))
		}
		for _, table := range []string{"guarantee", "election_results"} {
			m, ok := r.Route(tx, &Change{Schema: "public", Table: table, Op: Insert, New: row})
			if !ok {
				t.Fatalf("%s not routed", table)
			}
			if m.AdminOnly != c.adminOnly || m.Unroutable != c.reason || m.HasCommittee != c.hasCommittee || m.HasOwner != c.hasOwner {
				t.Errorf("%s committee=%s owner=%s: admin-only %v (%q) committee %v owner %v; want %v (%q) %v %v",
					table, c.committee, c.owner, m.AdminOnly, m.Unroutable, m.HasCommittee, m.HasOwner, c.adminOnly, c.reason, c.hasCommittee, c.hasOwner)
			}
		}
	}

	// The decoder's verdict (routing columns not published, key-only
	// delete) carries through.
	m, _ := r.Route(tx, &Change{Schema: "public", Table: "guarantee", Op: Insert, New: Row{col("id", "1")},
		Unscoped: true, UnscopedReason: UnroutableMissingColumns})
	if !m.AdminOnly || m.Unroutable != UnroutableMissingColumns {
		t.Errorf("unscoped change: admin-only %v, reason %q", m.AdminOnly, m.Unroutable)
	}
}

// FuzzRoute routes a change with arbitrary column values (as the decoder
// would encode them: JSON, or a JSON string) and arbitrary names: the frame
// is valid JSON, and the scope is exactly what the routing values say —
// readable exact integers scope it, NULL or absence leaves it unscoped,
// anything else makes it admin-only.
func FuzzRoute(f *testing.F) {
	f.Add("3", "12", "notes", `"x"`, uint8(0))
	f.Add(`"3.00"`, "null", "n", "1", uint8(1))
	f.Add("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "", "é\"", "{}", uint8(2))
	f.Add("9223372036854775808", "-0", "", "[1,2]", uint8(3))
	f.Add("00", "+1", "x", "1e400", uint8(4))
	r := NewRouter(mustTables(f, DefaultTables))
	tx := &Tx{CommitLSN: 1, CommitTime: time.Unix(1, 0)}
	f.Fuzz(func(t *testing.T, committee, owner, name, value string, op uint8) {
		asJSON := func(s string) []byte {
			if json.Valid([]byte(s)) {
				return []byte(strings.TrimSpace(s))
			}
			return jsonx.AppendString(nil, s)
		}
		row := Row{col("id", "1"), {Name: name, Value: asJSON(value)}}
		if committee != "" {
			row = append(row, Column{Name: CommitteeColumn, Value: asJSON(committee)})
		}
		if owner != "" {
			row = append(row, Column{Name: OwnerColumn, Value: asJSON(owner)})
		}
		ch := Change{Schema: "public", Table: string(Kinds[op%4]), Op: Op(op%4 + 1), Pos: Position{LSN: 1}}
		if ch.Op == Delete {
			ch.Old = row
		} else {
			ch.New = row
			ch.Old = Row{{Name: name, Value: []byte(`"old"`)}}
		}
		m, ok := r.Route(tx, &ch)
		if !ok {
			t.Fatal("tracked table not routed")
		}
		if !json.Valid(m.JSON) {
			t.Fatalf("invalid JSON frame: %s", m.JSON)
		}
		if ch.Op == Truncate {
			return
		}
		scoped := func(v []byte) (id int64, state string) {
			if v == nil || string(v) == "null" {
				return 0, "none"
			}
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				s = string(v) // a bare JSON value
			} else if string(v) != `"`+s+`"` {
				return 0, "bad" // escapes: not digits as written
			}
			n, ok := new(big.Int).SetString(s, 10)
			if !ok || n.String() != s || !n.IsInt64() {
				return 0, "bad"
			}
			return n.Int64(), "ok"
		}
		c, cs := scoped(findValue(row, CommitteeColumn))
		o, os := scoped(findValue(row, OwnerColumn))
		if name == CommitteeColumn || name == OwnerColumn {
			return // the first column of that name decides; covered above
		}
		if (cs == "bad" || os == "bad") != m.AdminOnly {
			t.Fatalf("committee %s (%s) owner %s (%s): admin-only %v", findValue(row, CommitteeColumn), cs, findValue(row, OwnerColumn), os, m.AdminOnly)
		}
		if m.AdminOnly && m.Unroutable == "" {
			t.Fatal("admin-only without a reason")
		}
		if (cs == "ok") != m.HasCommittee || cs == "ok" && m.Committee != c {
			t.Fatalf("committee %s: got %d %v", findValue(row, CommitteeColumn), m.Committee, m.HasCommittee)
		}
		if (os == "ok") != m.HasOwner || os == "ok" && m.Owner != o {
			t.Fatalf("owner %s: got %d %v", findValue(row, OwnerColumn), m.Owner, m.HasOwner)
		}
	})
}

func findValue(r Row, name string) []byte {
	v, _ := r.Get(name)
	return v
}
