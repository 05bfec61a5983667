package broadcast

import (
	"context"
	"fmt"
	"slices"

	"github.com/walcast/walcast/schema"
)

// startState is where Follow starts when Preload ran: the stream's newest
// entry and epoch as Preload read them, so that nothing appended in
// between is skipped.
type startState struct {
	head  schema.Position
	epoch string
}

// Preload reads the newest entries of the stream (as many as the hub's
// window serves replays from) into hub before any client connects, so
// that a replica that just started serves resumes from memory instead of
// reading Redis once per resume. Call it before Follow and before the
// server accepts connections; Follow then continues from where it stopped.
// On an error nothing is preloaded, and replays read Redis (bounded).
func (b *RedisBus) Preload(ctx context.Context, hub *Hub) error {
	if b.history > 0 {
		hub.LimitResume(int(b.history))
	}
	head, err := b.Head(ctx)
	if err != nil {
		return err
	}
	ep, earlier, err := b.epoch(ctx)
	if err != nil {
		return err
	}
	n := hub.resumeCapacity()
	// Newest first, one more than kept: the extra one is "before".
	var got []*schema.Message
	end := head.String()
	for !head.IsZero() && len(got) <= n {
		count := min(replayPage, n+1-len(got))
		res, err := b.rdb.XRevRangeN(ctx, b.key, end, "-", int64(count)).Result()
		if b.note(err) != nil {
			return fmt.Errorf("preload %s: %w", b.key, err)
		}
		for _, x := range res {
			m, err := fromEntry(x)
			if err != nil {
				b.log.Warn("skipping unreadable stream entry", "err", err)
				continue
			}
			got = append(got, m)
		}
		if len(res) < count {
			break
		}
		end = "(" + res[len(res)-1].ID
	}
	var before schema.Position
	if len(got) > n {
		before, got = got[n].Pos, got[:n]
	}
	complete := false
	if before.IsZero() && len(got) > 0 {
		info, err := b.rdb.XInfoStream(ctx, b.key).Result()
		if b.note(err) != nil {
			return fmt.Errorf("preload %s: %w", b.key, err)
		}
		complete = !trimmedAfter(info, schema.Position{})
	}
	slices.Reverse(got)
	hub.Start(head)
	hub.ForgetEarlier(earlier)
	if len(got) > 0 && !hub.Preload(got, before, complete) {
		return nil // the hub moved on: Follow starts on its own
	}
	b.start = &startState{head: head, epoch: ep}
	b.log.Info("preloaded the newest entries for resumes", "entries", len(got), "from_start", complete)
	return nil
}
