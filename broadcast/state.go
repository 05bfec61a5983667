package broadcast

import (
	"context"
	"slices"

	"github.com/walcast/walcast/schema"
)

// StateStore is the live state kept next to the stream: the latest version
// of every tracked row, by table and primary key, updated in the same
// atomic step as the append that carries the change, so that state and
// stream never disagree. RedisBus and MemoryBus implement it.
type StateStore interface {
	// LoadState replaces the state of tables by a consistent snapshot
	// taken at `at`: rows holds every row of those tables as of `at`
	// (messages as the router builds them for an insert, Row.Op ==
	// RowUpsert, Pos == at), delivered in batches through the iterator.
	// LoadState stages them, applies the stream's changes after `at`,
	// swaps the staged state in atomically with respect to Append, and
	// records `at` as the state's floor. It fails with a clear error if
	// the stream no longer holds every change after `at` (trimmed), so
	// the caller can retry with a new snapshot.
	LoadState(ctx context.Context, at schema.Position, tables []string,
		rows func(yield func(batch []schema.Message) error) error) error
	// StateInfo reports what the state holds, for `walcast check`,
	// /readyz and metrics.
	StateInfo(ctx context.Context) (StateStatus, error)
	// ReadState streams the rows of tables (all when empty) in batches of
	// at most n, and returns the stream position they are consistent with
	// at least: every change up to it is reflected, and rows may be newer.
	ReadState(ctx context.Context, tables []string, n int,
		fn func(batch []StateRow) error) (schema.Position, error)
}

// StateRow is one row of the live state, with the scope its latest change
// had, so that a sync is scoped by the same rule as changes without a
// database round trip.
type StateRow struct {
	Table   string          // "public.guarantee"
	Key     string          // canonical primary key, `[7]`
	Type    string          // message type of the table's changes
	Version schema.Position // the position of the change that last wrote the row

	Committee    int64
	HasCommittee bool
	Owner        int64
	HasOwner     bool
	AdminOnly    bool

	Data []byte // the frame's "data" JSON of the row's latest change
	// Oversized: the row was too large to send whole; Data holds its key
	// and routing columns only (a sync marks it, for clients to refetch).
	Oversized bool
}

// StateStatus is what the state holds.
type StateStatus struct {
	// Ready: a complete state exists (LoadState finished, and no new
	// epoch discarded it since).
	Ready bool
	// Floor is the snapshot position of the last LoadState.
	Floor schema.Position
	// Tables holds, per qualified table name, what its state holds.
	Tables map[string]TableState
}

// TableState is one table's part of the state.
type TableState struct {
	// Type is the message type of the table's rows; "" while the table
	// never held a row.
	Type  string
	Rows  int64 // rows held
	Bytes int64 // bytes of row data held (keys and data, not overhead)
	// Off: the table holds no state because it exceeded --state-max-rows
	// (or state is disabled); Reason says why and what to do.
	Off    bool
	Reason string
}

var (
	_ StateStore = (*MemoryBus)(nil)
	_ StateStore = (*RedisBus)(nil)
)

// tableNames returns the tables that hold state, sorted.
func (s StateStatus) tableNames() []string {
	names := make([]string, 0, len(s.Tables))
	for t := range s.Tables {
		names = append(names, t)
	}
	slices.Sort(names)
	return names
}
