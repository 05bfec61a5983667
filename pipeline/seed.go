package pipeline

import (
	"context"
	"time"

	"github.com/walcast/walcast/schema"
)

// StateBus is what seeding needs of the bus: the load of a consistent
// snapshot into its live state (broadcast's StateStore).
type StateBus interface {
	LoadState(ctx context.Context, at schema.Position, tables []string,
		rows func(yield func(batch []schema.Message) error) error) error
}

// Seeder loads the live state from the rows capture reads under a
// consistent snapshot (it satisfies cdc.StateLoader): each row becomes,
// through the same router, the message an insert of it would have made.
type Seeder struct {
	router *schema.Router
	bus    StateBus
	ready  func(ctx context.Context) (bool, error)
}

// NewSeeder returns the seeder that routes with router and loads into bus;
// ready reports whether the bus holds a complete live state.
func NewSeeder(router *schema.Router, bus StateBus, ready func(ctx context.Context) (bool, error)) *Seeder {
	return &Seeder{router: router, bus: bus, ready: ready}
}

// StateReady reports whether the bus holds a complete live state.
func (s *Seeder) StateReady(ctx context.Context) (bool, error) { return s.ready(ctx) }

// LoadState routes the snapshot's rows, inserts at position at committed
// at taken, and loads them into the bus's live state of tables. Only the
// tables the router knows a primary key of are loaded: their changes are
// the ones that carry a row (a table loaded without would read as empty).
func (s *Seeder) LoadState(ctx context.Context, at schema.Position, taken time.Time, tables []string,
	rows func(yield func([]schema.Change) error) error) error {
	tx := schema.Tx{CommitLSN: at.LSN, CommitTime: taken}
	keyed := make([]string, 0, len(tables))
	for _, t := range tables {
		if s.router.Keyed(t) {
			keyed = append(keyed, t)
		}
	}
	return s.bus.LoadState(ctx, at, keyed, func(yield func([]schema.Message) error) error {
		return rows(func(changes []schema.Change) error {
			msgs := make([]schema.Message, 0, len(changes))
			for i := range changes {
				if m, ok := s.router.Route(&tx, &changes[i]); ok && m.Row != nil {
					msgs = append(msgs, m)
				}
			}
			return yield(msgs)
		})
	})
}
