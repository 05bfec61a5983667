package schema

import "github.com/walcast/walcast/internal/jsonx"

// RowOp is what a change does to the live state of its table.
type RowOp uint8

// The operations a change applies to live state.
const (
	RowUpsert RowOp = iota + 1 // insert or update: the row is now Data
	RowDelete                  // the row is gone
	RowClear                   // TRUNCATE: every row of Table is gone (Key empty)
)

// String names the operation, for logs and test failures.
func (o RowOp) String() string {
	switch o {
	case RowUpsert:
		return "upsert"
	case RowDelete:
		return "delete"
	case RowClear:
		return "clear"
	}
	return "unknown"
}

// RowRef ties a message to the row it changes, so that whoever stores the
// message can keep the latest version of every row (live state) in the
// same step.
type RowRef struct {
	// Table is the qualified table name, as in the frame's "table":
	// "public.guarantee".
	Table string
	// Key is the canonical primary key: the JSON array text of the primary
	// key's values in key order, e.g. `[7]`; "" for RowClear.
	Key string
	Op  RowOp
	// Data is, for RowUpsert, exactly the frame's "data" JSON (for
	// voting_update the wrapped object); nil otherwise.
	Data []byte
	// Unchanged names the columns of an update that the WAL did not carry
	// (unchanged TOASTed values, the frame's "unchanged"): the state keeps
	// the values it holds for them (see MergeUnchanged).
	Unchanged []string
	// OldKey is, for an update that changed the primary key, the key the
	// row had before (the frame's "old_key"): that row is gone.
	OldKey string
	// Oversized: the row was too large to send whole (the frame's
	// "oversized"); Data holds its key and routing columns only.
	Oversized bool
}

// WrapMembers are the members of a voting_update's data that hold the
// row: the state merges unchanged columns inside them.
var WrapMembers = []string{"vote_count", "election_results"}

// MergeUnchanged returns next, the "data" of a change whose unchanged
// columns (TOASTed values the WAL did not carry) are missing, with those
// columns' values taken from prev, the data the state held for the row.
// A column prev lacks stays missing. For voting_update data the row is the
// wrapped object (WrapMembers). The result adds the columns at the end of
// the object: member order carries no meaning in JSON.
//
// Both arguments are walcast's own data JSON (compact at the top level);
// the Redis append script does the same in Lua (broadcast).
func MergeUnchanged(prev, next []byte, unchanged []string) []byte {
	if len(unchanged) == 0 || len(prev) == 0 || len(next) < 2 || next[0] != '{' {
		return next
	}
	for _, w := range WrapMembers {
		name := string(jsonx.AppendString(nil, w))
		ns, ne, ok := member(next, name)
		if !ok || next[ns] != '{' {
			continue
		}
		ps, pe, ok := member(prev, name)
		if !ok {
			return next
		}
		inner := mergeFlat(prev[ps:pe], next[ns:ne], unchanged)
		out := make([]byte, 0, len(next)+len(inner))
		out = append(out, next[:ns]...)
		out = append(out, inner...)
		return append(out, next[ne:]...)
	}
	return mergeFlat(prev, next, unchanged)
}

// mergeFlat adds to the object next the members of prev named in names
// that next lacks.
func mergeFlat(prev, next []byte, names []string) []byte {
	out := append([]byte(nil), next[:len(next)-1]...)
	for _, n := range names {
		name := string(jsonx.AppendString(nil, n))
		if _, _, ok := member(next, name); ok {
			continue
		}
		s, e, ok := member(prev, name)
		if !ok {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, name...)
		out = append(out, ':')
		out = append(out, prev[s:e]...)
	}
	return append(out, '}')
}

// member finds the value of the top-level member whose key is name (as
// JSON text, quotes included) in the object obj; it returns the value's
// start and end offsets.
func member(obj []byte, name string) (start, end int, ok bool) {
	if len(obj) < 2 || obj[0] != '{' || obj[1] == '}' {
		return 0, 0, false
	}
	i := 1
	for i < len(obj) {
		ke := skipValue(obj, i)
		if ke+1 >= len(obj) {
			return 0, 0, false
		}
		ve := skipValue(obj, ke+1)
		if string(obj[i:ke]) == name {
			return ke + 1, ve, true
		}
		if ve >= len(obj) || obj[ve] != ',' {
			return 0, 0, false
		}
		i = ve + 1
	}
	return 0, 0, false
}

// skipValue returns the offset just after the JSON value starting at i.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return len(b)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipValue(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	for j := i; j < len(b); j++ {
		if b[j] == ',' || b[j] == '}' || b[j] == ']' {
			return j
		}
	}
	return len(b)
}
