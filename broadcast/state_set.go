package broadcast

import (
	"fmt"

	"github.com/walcast/walcast/schema"
)

// DefaultStateMaxRows is --state-max-rows' default: rows kept per table.
const DefaultStateMaxRows = 1_000_000

// stateMaxRows turns a configured limit into the one the store applies:
// 0 is the default, a negative value disables state (returned as 0).
func stateMaxRows(n int) int {
	switch {
	case n == 0:
		return DefaultStateMaxRows
	case n < 0:
		return 0
	}
	return n
}

// stateOffReason is why a table exceeding the limit holds no state, with
// the fix.
func stateOffReason(max int) string {
	return fmt.Sprintf("more than %d rows (--state-max-rows): raise the limit, then run walcast state rebuild", max)
}

// stateSet is live state held in process: MemoryBus's state and the
// staging of its LoadState. It applies the rules the Redis scripts apply
// (redis_state.go): a change is applied only when its position is after
// the floor and after the row's stored version; only tables a LoadState
// registered hold state; a table above the limit is dropped and off.
type stateSet struct {
	ready   bool
	floor   schema.Position
	maxRows int // 0: no state at all
	tables  map[string]*stateTable
}

// stateTable is one table's rows.
type stateTable struct {
	typ    string
	rows   map[string]*StateRow
	bytes  int64
	off    bool
	reason string
}

func newStateSet(maxRows int) *stateSet {
	return &stateSet{maxRows: maxRows, tables: map[string]*stateTable{}}
}

// register makes the set keep tables, empty.
func (s *stateSet) register(tables []string) {
	for _, t := range tables {
		s.tables[t] = &stateTable{rows: map[string]*StateRow{}}
	}
}

// rowBytes is what a row counts towards a table's bytes: its key and data.
func rowBytes(r *StateRow) int64 { return int64(len(r.Key) + len(r.Data)) }

// apply applies the change m to the state; it returns the table it
// turned off (the limit was exceeded), or "". A change at or before the
// floor is reflected already.
func (s *stateSet) apply(m *schema.Message) (turnedOff string) {
	if !s.floor.Less(m.Pos) {
		return ""
	}
	return s.put(m)
}

// put applies m, a change or a snapshot's row (at the floor).
func (s *stateSet) put(m *schema.Message) (turnedOff string) {
	r := m.Row
	if r == nil {
		return ""
	}
	t := s.tables[r.Table]
	if t == nil || t.off {
		return ""
	}
	switch r.Op {
	case schema.RowClear:
		clear(t.rows)
		t.bytes = 0
	case schema.RowDelete:
		t.remove(r.Key, m.Pos)
	case schema.RowUpsert:
		prev := t.rows[r.Key]
		if prev != nil && !prev.Version.Less(m.Pos) {
			return ""
		}
		row := &StateRow{Table: r.Table, Key: r.Key, Type: m.Type, Version: m.Pos,
			Committee: m.Committee, HasCommittee: m.HasCommittee, Owner: m.Owner, HasOwner: m.HasOwner,
			AdminOnly: m.AdminOnly, Data: r.Data, Oversized: r.Oversized}
		if prev != nil {
			row.Data = schema.MergeUnchanged(prev.Data, r.Data, r.Unchanged)
			t.bytes -= rowBytes(prev)
		}
		t.rows[r.Key] = row
		t.bytes += rowBytes(row)
		t.typ = m.Type
		if r.OldKey != "" && r.OldKey != r.Key {
			t.remove(r.OldKey, m.Pos)
		}
		if len(t.rows) > s.maxRows {
			*t = stateTable{typ: t.typ, rows: map[string]*StateRow{}, off: true, reason: stateOffReason(s.maxRows)}
			return r.Table
		}
	}
	return ""
}

// remove deletes the row of key when it is older than pos.
func (t *stateTable) remove(key string, pos schema.Position) {
	if prev := t.rows[key]; prev != nil && prev.Version.Less(pos) {
		delete(t.rows, key)
		t.bytes -= rowBytes(prev)
	}
}

// status reports the set as StateInfo does.
func (s *stateSet) status() StateStatus {
	st := StateStatus{Ready: s.ready, Floor: s.floor, Tables: make(map[string]TableState, len(s.tables))}
	for name, t := range s.tables {
		st.Tables[name] = TableState{Type: t.typ, Rows: int64(len(t.rows)), Bytes: t.bytes, Off: t.off, Reason: t.reason}
	}
	return st
}
