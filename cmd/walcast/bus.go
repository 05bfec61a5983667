package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/pipeline"
)

// busStore is the bus as every part of a process uses it: capture appends
// to it and records its lineage, the dashboards read its head, the server
// resumes clients from its history and syncs them from its live state.
type busStore interface {
	pipeline.DashboardBus
	broadcast.History
	broadcast.StateStore
	cdc.Lineage
}

// processBus is the bus of one process, one value whatever its kind: the
// Redis stream when --redis-url is set, the in-process ring otherwise.
type processBus struct {
	busStore
	redis *broadcast.RedisBus // nil for the in-process ring
}

// openBus opens the process's bus and checks it; call Close. The
// in-process ring delivers to hub as it stores.
func (a *App) openBus(ctx context.Context, hub *broadcast.Hub, met *metrics, replaced func(conn, reason string)) (*processBus, error) {
	cfg := a.cfg
	if cfg.RedisURL == "" {
		mem := broadcast.NewMemoryBus(cfg.History, hub)
		mem.SetStateMaxRows(stateMaxRows(cfg.StateMaxRows))
		mem.SetLogger(a.log)
		met.watchState(mem)
		return &processBus{busStore: mem}, nil
	}
	redis, err := broadcast.NewRedisBus(broadcast.RedisConfig{URL: cfg.RedisURL, History: cfg.History, Logger: a.log,
		StateMaxRows: stateMaxRows(cfg.StateMaxRows),
		Timeout:      cfg.Transport.RedisTimeout, Transport: cfg.Transport.TCP, OnReplaced: replaced,
		MinReplicas: cfg.Transport.RedisMinReplicas, ReplicaTimeout: cfg.Transport.RedisReplicaTimeout})
	if err != nil {
		return nil, &usageError{"--redis-url: " + err.Error()}
	}
	met.watchRedis(redis)
	met.watchState(redis)
	if err := a.checkRedis(ctx, redis); err != nil {
		redis.Close()
		return nil, err
	}
	return &processBus{busStore: redis, redis: redis}, nil
}

// Close closes the Redis client, if any.
func (b *processBus) Close() {
	if b.redis != nil {
		b.redis.Close()
	}
}

// deliver returns the loop that feeds hub from the Redis stream (none for
// the in-process ring, which feeds it as it stores), after loading the
// stream's newest entries into hub.
func (b *processBus) deliver(ctx context.Context, hub *broadcast.Hub, log *slog.Logger) []func(context.Context) error {
	if b.redis == nil {
		return nil
	}
	// Before clients connect: resumes are then served from memory.
	if err := b.redis.Preload(ctx, hub); err != nil {
		log.Warn("cannot preload the stream's newest entries; resumes read Redis meanwhile (bounded)", "err", err)
	}
	return []func(context.Context) error{func(ctx context.Context) error { return b.redis.Follow(ctx, hub) }}
}

// health reports the bus's part of /readyz.
func (b *processBus) health() (ok bool, detail string) {
	switch {
	case b.redis == nil:
		return true, "ok (in-process)"
	case !b.redis.Healthy():
		return false, "redis unreachable"
	}
	// Appends that fewer replicas than --redis-min-replicas hold are not
	// confirmed: capture is stuck until the replicas catch up.
	if short, _, _ := b.redis.ReplicaStatus(); short != nil {
		return false, "replicas behind: " + short.Error()
	}
	return true, "ok (redis)"
}

// checkRedis verifies the bus at start. A configuration problem (refused
// AUTH, a key of another type) stops walcast; an unreachable Redis is only
// logged: capture retries and does not confirm meanwhile.
func (a *App) checkRedis(ctx context.Context, r *broadcast.RedisBus) error {
	err := r.Check(ctx)
	var be *broadcast.BusError
	if errors.As(err, &be) {
		return err
	}
	if err != nil {
		a.log.Error("redis is unreachable; retrying in the background, not ready meanwhile", "err", err)
	}
	return nil
}

// stateMaxRows turns --state-max-rows into the buses' setting: the flag's
// 0 disables live state, which the buses spell as a negative number.
func stateMaxRows(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
