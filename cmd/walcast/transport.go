package main

import (
	"errors"
	"strconv"
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
}

func init() {
	duration := func(min time.Duration, zeroOK bool, set func(c *Config, d time.Duration)) func(c *Config, v string) error {
		return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || (d == 0 && !zeroOK) || (d > 0 && d < min) {
				if zeroOK {
					return errors.New("want a duration of at least " + min.String() + ", such as 15s, or 0 for the operating system's default")
				}
				return errors.New("want a duration of at least " + min.String() + ", such as 5s")
			}
			set(c, d)
			return nil
		}
	}
	all := []string{cmdRun, cmdCapture, cmdServe}
	options = append(options,
		option{
			flag: "tcp-keepalive-idle", env: []string{"WALCAST_TCP_KEEPALIVE_IDLE"}, def: "15s",
			help: "idle time before TCP keepalive probes start on connections to PostgreSQL and Redis; 0 turns keepalive off",
			in:   all,
			set:  duration(time.Second, true, func(c *Config, d time.Duration) { c.Transport.TCP.KeepAliveIdle = d }),
		},
		option{
			flag: "tcp-keepalive-interval", env: []string{"WALCAST_TCP_KEEPALIVE_INTERVAL"}, def: "5s",
			help: "time between unanswered TCP keepalive probes",
			in:   all,
			set:  duration(time.Second, false, func(c *Config, d time.Duration) { c.Transport.TCP.KeepAliveInterval = d }),
		},
		option{
			flag: "tcp-keepalive-count", env: []string{"WALCAST_TCP_KEEPALIVE_COUNT"}, def: "3",
			help: "unanswered TCP keepalive probes that close a connection",
			in:   all,
			set: func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 127 {
					return errors.New("want an integer from 1 to 127")
				}
				c.Transport.TCP.KeepAliveCount = n
				return nil
			},
		},
		option{
			flag: "tcp-user-timeout", env: []string{"WALCAST_TCP_USER_TIMEOUT"}, def: "30s",
			help: "TCP_USER_TIMEOUT (Linux): how long data sent to PostgreSQL or Redis may stay unacknowledged before the connection is closed; 0: the operating system's default (about 15 minutes)",
			in:   all,
			set:  duration(time.Second, true, func(c *Config, d time.Duration) { c.Transport.TCP.UserTimeout = d }),
		},
		option{
			flag: "query-timeout", env: []string{"WALCAST_QUERY_TIMEOUT"}, def: "30s",
			help: "longest wait for PostgreSQL on an ordinary connection (a setup step, a heartbeat, a dashboard round); a connection that does not answer is closed and replaced",
			in:   []string{cmdRun, cmdCapture},
			set:  duration(100*time.Millisecond, false, func(c *Config, d time.Duration) { c.Transport.QueryTimeout = d }),
		},
		option{
			flag: "redis-timeout", env: []string{"WALCAST_REDIS_TIMEOUT"}, def: "5s",
			help: "longest wait for Redis to answer a command (a blocking read waits its block time plus this); a connection that does not answer is closed and replaced",
			in:   all,
			set:  duration(100*time.Millisecond, false, func(c *Config, d time.Duration) { c.Transport.RedisTimeout = d }),
		},
	)
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
