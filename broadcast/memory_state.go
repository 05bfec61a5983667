package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/walcast/walcast/schema"
)

// SetStateMaxRows sets the rows of live state kept per table (0:
// DefaultStateMaxRows; negative: no live state). Call it before use.
func (b *MemoryBus) SetStateMaxRows(n int) {
	b.mu.Lock()
	b.state = newStateSet(stateMaxRows(n))
	b.mu.Unlock()
}

// applyState applies stored messages to the state, under b.mu (the
// append's critical section).
func (b *MemoryBus) applyState(fresh []*schema.Message) {
	if !b.state.ready {
		return
	}
	for _, m := range fresh {
		if t := b.state.apply(m); t != "" {
			b.stateLog().Error("live state turned off for a table: it holds more rows than --state-max-rows; sync reports it unavailable. Raise --state-max-rows, then restart walcast (or run walcast state rebuild)",
				"table", t, "state_max_rows", b.state.maxRows)
		}
	}
}

// LoadState implements StateStore (see loadState).
func (b *MemoryBus) LoadState(ctx context.Context, at schema.Position, tables []string,
	rows func(yield func(batch []schema.Message) error) error) error {
	b.mu.RLock()
	max := b.state.maxRows
	b.mu.RUnlock()
	if max == 0 {
		return errors.New("load state: live state is disabled (--state-max-rows 0)")
	}
	if err := loadState(ctx, &memoryStager{b: b, set: newStateSet(max)}, at, tables, rows); err != nil {
		return err
	}
	logLoadedOff(ctx, b, b.stateLog(), tables)
	return nil
}

// memoryStager stages a LoadState in process.
type memoryStager struct {
	b   *MemoryBus
	set *stateSet
}

func (s *memoryStager) stageBegin(ctx context.Context, at schema.Position, tables []string) error {
	s.set.floor = at
	s.set.register(tables)
	s.b.mu.RLock()
	defer s.b.mu.RUnlock()
	return s.b.stateGap(at)
}

func (s *memoryStager) stage(ctx context.Context, msgs []*schema.Message) error {
	for _, m := range msgs {
		s.set.put(m) // the snapshot's rows are at the floor
	}
	return nil
}

func (s *memoryStager) replay(ctx context.Context, cursor schema.Position, limit int) (schema.Position, int, error) {
	s.b.mu.RLock()
	defer s.b.mu.RUnlock()
	return s.applyAfter(cursor, limit)
}

// applyAfter applies up to limit stored changes after cursor, under b.mu.
func (s *memoryStager) applyAfter(cursor schema.Position, limit int) (schema.Position, int, error) {
	if err := s.b.stateGap(cursor); err != nil {
		return cursor, 0, err
	}
	msgs := s.b.after(cursor, limit)
	for _, m := range msgs {
		s.set.apply(m)
	}
	if len(msgs) > 0 {
		cursor = msgs[len(msgs)-1].Pos
	}
	return cursor, len(msgs), nil
}

func (s *memoryStager) swap(ctx context.Context, cursor, at schema.Position, tables []string) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, _, err := s.applyAfter(cursor, b.n); err != nil {
		return err
	}
	for _, t := range tables {
		b.state.tables[t] = s.set.tables[t]
	}
	b.state.ready, b.state.floor = true, at
	return nil
}

// stateGap reports ErrStateGap when the ring lost changes after pos;
// under b.mu. Unlike a resume position, pos need not be a stored id:
// the ring holds every change this process stored after b.trimmed.
func (b *MemoryBus) stateGap(pos schema.Position) error {
	if pos.Less(b.trimmed) {
		return fmt.Errorf("the in-process history dropped changes up to %s (--history): %w", b.trimmed, ErrStateGap)
	}
	return nil
}

// StateInfo implements StateStore.
func (b *MemoryBus) StateInfo(ctx context.Context) (StateStatus, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.state.status(), nil
}

// ReadState implements StateStore. The rows are taken with the head under
// the lock, so they are exactly the state at it.
func (b *MemoryBus) ReadState(ctx context.Context, tables []string, n int,
	fn func(batch []StateRow) error) (schema.Position, error) {
	b.mu.RLock()
	head := b.last
	if len(tables) == 0 {
		tables = b.state.status().tableNames()
	}
	var rows []*StateRow
	for _, t := range tables {
		if st := b.state.tables[t]; st != nil {
			for _, r := range st.rows {
				rows = append(rows, r)
			}
		}
	}
	b.mu.RUnlock()
	for batch := range slices.Chunk(rows, max(n, 1)) {
		out := make([]StateRow, len(batch))
		for i, r := range batch {
			out[i] = *r
		}
		if err := fn(out); err != nil {
			return schema.Position{}, err
		}
	}
	return head, nil
}

// SetLogger sets where the bus logs (slog.Default when unset).
func (b *MemoryBus) SetLogger(log *slog.Logger) {
	b.mu.Lock()
	b.log = log
	b.mu.Unlock()
}

func (b *MemoryBus) stateLog() *slog.Logger {
	if b.log == nil {
		return slog.Default()
	}
	return b.log
}
