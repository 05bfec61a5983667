package schema

import "time"

// Op is the kind of row change.
type Op uint8

// The row changes pgoutput reports.
const (
	Insert Op = iota + 1
	Update
	Delete
	Truncate
)

// String returns the action name clients see for op.
func (op Op) String() string {
	switch op {
	case Insert:
		return "created"
	case Update:
		return "updated"
	case Delete:
		return "deleted"
	case Truncate:
		return "truncated"
	}
	return "unknown"
}

// Column is one column value of a row, already encoded as JSON.
//
// The decoder encodes each value once, as it reads it from the WAL, so the
// rest of the pipeline only copies bytes.
type Column struct {
	Name  string
	Value []byte // JSON text: a number, string, object, array, true/false or null
	// Key, when set, is Name already encoded as a JSON object key with its
	// colon ("name":): the decoder encodes each relation's names once.
	Key []byte
}

// Row is a row's columns in table order.
type Row []Column

// Get returns the JSON of the named column and whether the row has it.
func (r Row) Get(name string) ([]byte, bool) {
	for i := range r {
		if r[i].Name == name {
			return r[i].Value, true
		}
	}
	return nil, false
}

// Change is one committed row change of a tracked table.
type Change struct {
	Schema string // namespace, e.g. "public"
	Table  string // relation name, e.g. "guarantee"
	Op     Op

	// New is the row after an insert or update. Columns whose value is an
	// unchanged TOASTed datum the WAL did not carry are absent from New and
	// named in Unchanged.
	New Row
	// Old is the row before an update or delete, as the table's replica
	// identity provides it: every column under REPLICA IDENTITY FULL
	// (OldFull), only the key columns otherwise, or nothing at all for an
	// update that did not change the key.
	Old     Row
	OldFull bool
	// Unchanged names the TOASTed columns of New that the WAL did not carry.
	Unchanged []string
	// Oversized is set when the row was too large to send whole: New and
	// Old then hold only key and routing columns, and Omitted names the
	// rest, so the client knows to refetch the row.
	Oversized bool
	Omitted   []string
	// Unscoped is set when the row lacks columns that scope its delivery
	// (committee_id, user_id) although its table has them: a delete under
	// a key-only replica identity, or a publication whose column list
	// leaves them out. Such a change goes to admins only;
	// UnscopedReason says why (an Unroutable constant).
	Unscoped       bool
	UnscopedReason string

	Pos Position // commit LSN of the transaction and ordinal of the change
}

// Tx is one committed transaction's changes to tracked tables, in order.
type Tx struct {
	// commitTimeText caches the formatted commit time for Route, which
	// writes it into every message of the transaction.
	commitTimeText []byte

	CommitLSN  uint64    // LSN of the commit record: the Position.LSN of every change
	EndLSN     uint64    // end of the commit record: the slot may be confirmed up to here once Tx is stored
	CommitTime time.Time // the transaction's commit timestamp
	Xid        uint32
	Changes    []Change
}
