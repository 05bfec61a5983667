package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/netguard"
)

// Transport timeouts: the flags that bound every round trip on walcast's
// connections to PostgreSQL and Redis, and the TCP settings that notice a
// dead peer underneath. See docs/operations.md#silent-connections.

// transportConfig holds the connection timeouts.
type transportConfig struct {
	TCP          netguard.Options
	QueryTimeout time.Duration
	RedisTimeout time.Duration
	// RedisMinReplicas: Redis replicas that must hold an append before it
	// counts as stored (WAIT); RedisReplicaTimeout bounds that wait.
	RedisMinReplicas    int
	RedisReplicaTimeout time.Duration
}

// replacedCounter counts connections closed because they went silent or
// failed, and replaced.
func (m *metrics) watchReplaced() func(conn, reason string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walcast_connections_replaced_total",
		Help: "Connections to PostgreSQL or Redis closed because they went silent (or failed) and replaced, by connection (replication, query, dashboard, redis, redis_follow, redis_presence, redis_pubsub) and reason.",
	}, []string{"conn", "reason"})
	m.reg.MustRegister(c)
	return func(conn, reason string) { c.WithLabelValues(conn, reason).Inc() }
}
