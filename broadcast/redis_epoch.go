package broadcast

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/schema"
)

// The stream's origin: a hash next to it records which database history
// its entries came from (capture checks it before streaming, see
// cdc/lineage.go) and its epoch. A new epoch deletes the stream, so that
// ids may start over below the old ones; serve replicas notice the epoch
// change and tell their clients to resync, and no id of an earlier epoch is
// resumed from again.
//
// Fields: sysid, timeline, slot (the origin); epoch (a counter); earlier
// (ids at or below it belong to an earlier epoch).

func (b *RedisBus) originKey() string { return b.key + ":origin" }

// Lineage returns the recorded origin and the stream's last generated id:
// the id Redis refuses to append at or below.
func (b *RedisBus) Lineage(ctx context.Context) (schema.Origin, bool, schema.Position, error) {
	var o schema.Origin
	h, err := b.rdb.HGetAll(ctx, b.originKey()).Result()
	if b.note(err) != nil {
		return o, false, schema.Position{}, fmt.Errorf("read %s: %w", b.originKey(), err)
	}
	o.SystemID, o.Slot = h["sysid"], h["slot"]
	if t, err := strconv.ParseInt(h["timeline"], 10, 32); err == nil {
		o.Timeline = int32(t)
	}
	top, err := b.lastGenerated(ctx)
	return o, o.SystemID != "", top, err
}

// lastGenerated returns the stream's last generated id; zero when there is
// no stream.
func (b *RedisBus) lastGenerated(ctx context.Context) (schema.Position, error) {
	info, err := b.rdb.XInfoStream(ctx, b.key).Result()
	if isNoSuchKey(err) {
		return schema.Position{}, b.note(nil)
	}
	if b.note(err) != nil {
		return schema.Position{}, fmt.Errorf("read %s: %w", b.key, err)
	}
	top, err := schema.ParsePosition(info.LastGeneratedID)
	if err != nil {
		return schema.Position{}, fmt.Errorf("read the last id of %s: %w", b.key, err)
	}
	return top, nil
}

// SetOrigin records the origin of the stream's history.
func (b *RedisBus) SetOrigin(ctx context.Context, o schema.Origin) error {
	err := b.rdb.HSet(ctx, b.originKey(), "sysid", o.SystemID, "timeline", o.Timeline, "slot", o.Slot).Err()
	if b.note(err) != nil {
		return fmt.Errorf("write %s: %w", b.originKey(), err)
	}
	return nil
}

// NewEpoch discards the stream and its dashboards, and records origin
// with a new epoch. Only capture appends, and it calls this before it
// streams, so nothing appends meanwhile.
func (b *RedisBus) NewEpoch(ctx context.Context, o schema.Origin, reason string) error {
	return b.discard(ctx, &o, schema.Position{}, reason)
}

// discard discards the stream and its dashboards and begins a new epoch:
// ids at or below the stream's last one, and below floor, belong to
// earlier epochs. origin, when not nil, is recorded; else the recorded
// one stays. An epoch counter that is gone (the hash was lost with the
// data) starts at the clock's milliseconds instead of 1, so that it
// differs from any counter a serve replica read before.
func (b *RedisBus) discard(ctx context.Context, o *schema.Origin, floor schema.Position, reason string) error {
	top, err := b.lastGenerated(ctx)
	if err != nil {
		return err
	}
	earlier, err := b.earlier(ctx)
	if err != nil {
		return err
	}
	ep, _, err := b.epoch(ctx)
	if err != nil {
		return err
	}
	for _, p := range []schema.Position{top, floor} {
		if earlier.Less(p) {
			earlier = p
		}
	}
	incr := int64(1)
	if ep == "" {
		incr = max(time.Now().UnixMilli(), 1)
	}
	// The live state goes with the stream it was kept with (and may
	// describe another database): it is loaded again.
	if err := b.dropState(ctx); err != nil {
		return fmt.Errorf("start a new epoch of %s: %w", b.key, err)
	}
	_, err = b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, b.key, b.dashboardKey(), b.dashboardIDsKey(), b.topKey())
		if o != nil {
			p.HSet(ctx, b.originKey(), "sysid", o.SystemID, "timeline", o.Timeline, "slot", o.Slot)
		}
		p.HSet(ctx, b.originKey(), "earlier", earlier.String(), "reason", reason)
		p.HIncrBy(ctx, b.originKey(), "epoch", incr)
		return nil
	})
	if b.note(err) != nil {
		return fmt.Errorf("start a new epoch of %s: %w", b.key, err)
	}
	b.forgetStored()
	b.log.Warn("started a new epoch: the stream's history was discarded; clients resuming from an earlier id get resync_required", "earlier_ids_up_to", earlier.String(), "reason", reason)
	return nil
}

// earlier returns the newest id of earlier epochs (zero when none).
func (b *RedisBus) earlier(ctx context.Context) (schema.Position, error) {
	v, err := b.rdb.HGet(ctx, b.originKey(), "earlier").Result()
	if errors.Is(err, redis.Nil) {
		return schema.Position{}, b.note(nil)
	}
	if b.note(err) != nil {
		return schema.Position{}, fmt.Errorf("read %s: %w", b.originKey(), err)
	}
	p, err := schema.ParsePosition(v)
	if err != nil {
		return schema.Position{}, fmt.Errorf("read %s earlier: %w", b.originKey(), err)
	}
	return p, nil
}

// epoch reads the epoch counter and the newest id of earlier epochs.
func (b *RedisBus) epoch(ctx context.Context) (string, schema.Position, error) {
	v, err := b.rdb.HMGet(ctx, b.originKey(), "epoch", "earlier").Result()
	if b.note(err) != nil {
		return "", schema.Position{}, fmt.Errorf("read %s: %w", b.originKey(), err)
	}
	e, earlier := epochFields(v)
	return e, earlier, nil
}

// epochFields reads HMGET epoch earlier.
func epochFields(v []any) (string, schema.Position) {
	var e string
	var earlier schema.Position
	if len(v) == 2 {
		e, _ = v[0].(string)
		if s, ok := v[1].(string); ok {
			earlier, _ = schema.ParsePosition(s)
		}
	}
	return e, earlier
}
