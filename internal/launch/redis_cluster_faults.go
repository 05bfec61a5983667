package launch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// Failover makes the replica of the primary that serves key's slot take
// over with CLUSTER FAILOVER: the replica first catches up with its
// primary, which meanwhile holds its clients, so no acknowledged write is
// lost. It waits until every running node agrees on the new owner and the
// old primary streams from it as a replica, and returns both.
func (c *RedisCluster) Failover(ctx context.Context, key string) (old, new *Redis, err error) {
	if old, err = c.Owner(ctx, key); err != nil {
		return nil, nil, err
	}
	if new, err = c.ReplicaOf(ctx, old); err != nil {
		return nil, nil, err
	}
	if _, err := new.Do(ctx, "CLUSTER", "FAILOVER"); err != nil {
		return nil, nil, err
	}
	if _, err := c.waitOwner(ctx, key, func(o *Redis) bool { return o == new }); err != nil {
		return nil, nil, err
	}
	return old, new, nil
}

// KillOwner crashes the primary that serves key's slot with SIGKILL and
// waits until the cluster promoted one of its replicas
// (cluster-node-timeout after the crash) and every running node agrees.
// Writes the replica had not received are lost, as in production. The
// killed node stays down until its Start; it then rejoins as a replica of
// the new primary.
func (c *RedisCluster) KillOwner(ctx context.Context, key string) (old, new *Redis, err error) {
	if old, err = c.Owner(ctx, key); err != nil {
		return nil, nil, err
	}
	if _, err = c.ReplicaOf(ctx, old); err != nil {
		return nil, nil, err // none to promote
	}
	if err := old.Kill(); err != nil {
		return nil, nil, err
	}
	if new, err = c.waitOwner(ctx, key, func(o *Redis) bool { return o != old }); err != nil {
		return nil, nil, err
	}
	return old, new, nil
}

// MigrateSlot moves key's slot, with every key in it, to the primary to,
// as `redis-cli --cluster reshard` does: the slot is marked importing on
// to and migrating on its owner, its keys move with MIGRATE (clients
// meanwhile get ASK for keys already moved), and SETSLOT NODE gives it to
// to on both and then on every other primary.
func (c *RedisCluster) MigrateSlot(ctx context.Context, key string, to *Redis) error {
	from, err := c.Owner(ctx, key)
	if err != nil || from == to {
		return err
	}
	slot, err := from.Do(ctx, "CLUSTER", "KEYSLOT", key)
	if err != nil {
		return err
	}
	s := strconv.FormatInt(slot.(int64), 10)
	fromID, err := from.DoString(ctx, "CLUSTER", "MYID")
	if err != nil {
		return err
	}
	toID, err := to.DoString(ctx, "CLUSTER", "MYID")
	if err != nil {
		return err
	}
	if _, err := to.Do(ctx, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID); err != nil {
		return err
	}
	if _, err := from.Do(ctx, "CLUSTER", "SETSLOT", s, "MIGRATING", toID); err != nil {
		return err
	}
	if err := c.migrateKeys(ctx, from, to, s); err != nil {
		return err
	}
	for _, r := range append([]*Redis{to, from}, c.Running()...) {
		// Replicas refuse SETSLOT; they learn the owner from their primary.
		if _, err := r.Do(ctx, "CLUSTER", "SETSLOT", s, "NODE", toID); err != nil && r == to {
			return err
		}
	}
	_, err = c.waitOwner(ctx, key, func(o *Redis) bool { return o == to })
	return err
}

// migrateKeys moves every key of slot from from to to, a batch per
// MIGRATE (atomic: a batch is on one side or the other).
func (c *RedisCluster) migrateKeys(ctx context.Context, from, to *Redis, slot string) error {
	for {
		v, err := from.Do(ctx, "CLUSTER", "GETKEYSINSLOT", slot, "1000")
		if err != nil {
			return err
		}
		keys, _ := v.([]any)
		if len(keys) == 0 {
			return nil
		}
		args := []string{"MIGRATE", "127.0.0.1", strconv.Itoa(to.Port()), "", "0", "10000", "KEYS"}
		for _, k := range keys {
			args = append(args, fmt.Sprint(k))
		}
		if _, err := from.Do(ctx, args...); err != nil {
			return err
		}
	}
}

// waitOwner waits until every running node names the same primary for
// key's slot and that primary is one ok accepts, then until the cluster is
// healthy; it returns that primary.
func (c *RedisCluster) waitOwner(ctx context.Context, key string, ok func(*Redis) bool) (*Redis, error) {
	var owner *Redis
	err := poll(ctx, readyTimeout, func() error {
		owner = nil
		for _, r := range c.Running() {
			o, err := c.ownerAt(ctx, r, key)
			if err != nil {
				return err
			}
			if owner != nil && o != owner {
				return fmt.Errorf("nodes disagree on who serves %s: %s and %s", key, owner.Addr(), o.Addr())
			}
			owner = o
		}
		if owner == nil {
			return errors.New("no cluster node runs")
		}
		if !ok(owner) {
			return fmt.Errorf("the nodes still say %s serves %s", owner.Addr(), key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for a new owner of %s: %w", key, err)
	}
	return owner, c.WaitHealthy(ctx)
}
