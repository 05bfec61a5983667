package schema

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
}
