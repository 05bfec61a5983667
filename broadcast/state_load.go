package broadcast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/walcast/walcast/schema"
)

// ErrStateGap is returned by LoadState when the stream no longer holds
// every change after the snapshot's position (history was trimmed past
// it): the caller takes a new snapshot and tries again.
var ErrStateGap = errors.New("the stream no longer holds every change after the snapshot (trimmed); take a new snapshot")

// stager is what LoadState needs of a bus: a staging area it fills from
// a snapshot and from the stream, and then swaps in.
type stager interface {
	// stageBegin empties the staging area and registers tables in it,
	// with floor at; ErrStateGap when the stream lacks changes after at.
	stageBegin(ctx context.Context, at schema.Position, tables []string) error
	// stage applies msgs (the snapshot's rows) to the staging area by the
	// state's rules.
	stage(ctx context.Context, msgs []*schema.Message) error
	// replay applies up to limit of the stream's changes after cursor to
	// the staging area; it returns the position of the last one and how
	// many it applied. ErrStateGap when the stream lacks some.
	replay(ctx context.Context, cursor schema.Position, limit int) (schema.Position, int, error)
	// swap applies the rest of the stream after cursor and replaces the
	// state of tables by the staged state, recording the floor at, in one
	// step with respect to Append.
	swap(ctx context.Context, cursor, at schema.Position, tables []string) error
}

// stateReplayPage is how many stream entries LoadState applies at a time;
// the last, short page is applied by the swap itself.
const stateReplayPage = 1000

// loadState is LoadState for either bus: stage the snapshot, apply the
// stream's changes after it page by page, and apply the last ones and
// swap the result in at once, so that a steady write load cannot keep
// the swap from happening.
func loadState(ctx context.Context, s stager, at schema.Position, tables []string,
	rows func(yield func(batch []schema.Message) error) error) error {
	if err := s.stageBegin(ctx, at, tables); err != nil {
		return fmt.Errorf("load state at %s: %w", at, err)
	}
	err := rows(func(batch []schema.Message) error {
		ptrs := make([]*schema.Message, len(batch))
		for i := range batch {
			ptrs[i] = &batch[i]
		}
		return s.stage(ctx, ptrs)
	})
	if err != nil {
		return fmt.Errorf("load state at %s: stage the snapshot: %w", at, err)
	}
	cursor := at
	for {
		next, n, err := s.replay(ctx, cursor, stateReplayPage)
		if err != nil {
			return fmt.Errorf("load state at %s: apply the changes after %s: %w", at, cursor, err)
		}
		cursor = next
		if n < stateReplayPage {
			break
		}
	}
	if err := s.swap(ctx, cursor, at, tables); err != nil {
		return fmt.Errorf("load state at %s: swap the state in: %w", at, err)
	}
	return nil
}

// logLoadedOff logs the tables a LoadState left off (over the limit).
func logLoadedOff(ctx context.Context, store StateStore, log *slog.Logger, tables []string) {
	st, err := store.StateInfo(ctx)
	if err != nil {
		return
	}
	for _, t := range tables {
		if ts := st.Tables[t]; ts.Off {
			log.Error("live state of a table is off after loading it: "+ts.Reason, "table", t)
		}
	}
}
