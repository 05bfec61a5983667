package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/walcast/walcast/schema"
)

// fakeBus is a bus with the rule that matters here: it refuses a message
// whose position is not above the newest stored one, as Redis refuses a
// stream id that does not increase.
type fakeBus struct {
	mu      sync.Mutex
	msgs    []schema.Message
	appends int   // successful appends
	fail    error // returned by the next Append, then cleared
	head    schema.Position
}

var errNotIncreasing = errors.New("position not above the stream's top")

func (b *fakeBus) Append(_ context.Context, msgs []schema.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.fail; err != nil {
		b.fail = nil
		return err
	}
	top := b.head
	for _, m := range msgs {
		if !top.Less(m.Pos) {
			return fmt.Errorf("append %s after %s: %w", m.Pos, top, errNotIncreasing)
		}
		top = m.Pos
	}
	b.msgs = append(b.msgs, msgs...)
	b.head = top
	b.appends++
	return nil
}

func (b *fakeBus) Head(context.Context) (schema.Position, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head, nil
}

// stored returns the positions stored, with a "d" suffix for dashboards.
func (b *fakeBus) stored() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s []string
	for _, m := range b.msgs {
		id := m.Pos.String()
		if m.Type == schema.DashboardPersonal {
			id += "d"
		}
		s = append(s, id)
	}
	return s
}

// fakeBuilder records the transactions noted.
type fakeBuilder struct {
	mu    sync.Mutex
	noted []uint64 // commit LSNs
}

func (f *fakeBuilder) Note(tx *schema.Tx) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noted = append(f.noted, tx.CommitLSN)
}

func (f *fakeBuilder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.noted)
}

// fakeObserver records what the sink reported.
type fakeObserver struct {
	unroutable []string // table:reason
	stored     int      // transactions
}

func (o *fakeObserver) Unroutable(table string, m *schema.Message) {
	o.unroutable = append(o.unroutable, table+":"+m.Unroutable)
}

func (o *fakeObserver) Stored(txs []schema.Tx, _ time.Duration) { o.stored += len(txs) }

// tx returns a transaction at lsn with n guarantee changes; complete says
// whether it is the transaction's last piece (it carries EndLSN).
func tx(lsn uint64, first, n int, complete bool) schema.Tx {
	t := schema.Tx{CommitLSN: lsn, CommitTime: time.Unix(1700000000, 0)}
	if complete {
		t.EndLSN = lsn + 8
	}
	for i := first; i < first+n; i++ {
		t.Changes = append(t.Changes, schema.Change{
			Schema: "public", Table: "guarantee", Op: schema.Insert,
			New: schema.Row{{Name: "id", Value: []byte(fmt.Sprint(i + 1))}, {Name: schema.CommitteeColumn, Value: []byte("7")}},
			Pos: schema.Position{LSN: lsn, Seq: uint64(i)},
		})
	}
	return t
}

// dashboard returns n dashboard messages (their positions are set on emit).
func dashboard(n int) []schema.Message {
	msgs := make([]schema.Message, n)
	for i := range msgs {
		msgs[i].Type = schema.DashboardPersonal
	}
	return msgs
}

func router() *schema.Router {
	tables, err := schema.ParseTables(schema.DefaultTables)
	if err != nil {
		panic(err)
	}
	return schema.NewRouter(tables)
}

// progress returns a Progress reporting confirmed and streaming.
func progress(confirmed uint64, streaming bool) Progress {
	return func() (uint64, bool) { return confirmed, streaming }
}
