package pipeline

import (
	"bytes"
	"context"
	"testing"

	"github.com/walcast/walcast/schema"
)

// fakeStateBus keeps what LoadState was given.
type fakeStateBus struct {
	at     schema.Position
	tables []string
	msgs   []schema.Message
}

func (b *fakeStateBus) LoadState(_ context.Context, at schema.Position, tables []string,
	rows func(yield func([]schema.Message) error) error) error {
	b.at, b.tables = at, tables
	return rows(func(batch []schema.Message) error { b.msgs = append(b.msgs, batch...); return nil })
}

// A snapshot's row becomes exactly the message the sink makes of the same
// row's insert committed at the snapshot's position and time; a table the
// router knows no primary key of is not loaded.
func TestSeederRoutesRowsAsInserts(t *testing.T) {
	bus := &fakeStateBus{}
	r := router()
	r.SetKeys(map[string][]string{"public.guarantee": {"id"}})
	s := NewSeeder(r, bus, func(context.Context) (bool, error) { return false, nil })
	insert := tx(100, 0, 3, true)
	at := schema.Position{LSN: 100}
	err := s.LoadState(context.Background(), at, insert.CommitTime, []string{"public.guarantee", "public.attendance"},
		func(yield func([]schema.Change) error) error {
			for i := range insert.Changes {
				ch := insert.Changes[i]
				ch.Pos = at
				if err := yield([]schema.Change{ch}); err != nil {
					return err
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if bus.at != at || len(bus.tables) != 1 || len(bus.msgs) != 3 {
		t.Fatalf("loaded at %s tables %v, %d messages; want at %s, guarantee, 3", bus.at, bus.tables, len(bus.msgs), at)
	}
	want, _ := r.Route(&insert, &schema.Change{Schema: "public", Table: "guarantee", Op: schema.Insert,
		New: insert.Changes[0].New, Pos: at})
	if got := bus.msgs[0]; !bytes.Equal(got.JSON, want.JSON) || got.Committee != want.Committee || got.Pos != at ||
		got.Row == nil || got.Row.Op != schema.RowUpsert || got.Row.Key != "[1]" {
		t.Errorf("seeded message %s (committee %d), want %s (committee %d)", got.JSON, got.Committee, want.JSON, want.Committee)
	}
	if ready, err := s.StateReady(context.Background()); ready || err != nil {
		t.Errorf("StateReady = %v, %v; want the bus's answer, false", ready, err)
	}
}
