package testenv

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/launch"
)

// Sentinels are throwaway Redis Sentinels watching one primary, owned by
// one test.
type Sentinels struct {
	Master   string // the name the primary is monitored under
	list     []*Redis
	password string
}

// SentinelOption changes how StartSentinels runs them.
type SentinelOption func(*launch.SentinelConfig)

// WithSentinelPassword gives the Sentinels a password (requirepass).
func WithSentinelPassword(pw string) SentinelOption {
	return func(c *launch.SentinelConfig) { c.Password = pw }
}

// StartSentinels runs n Sentinels watching primary as "walcast", quorum
// of them to agree it is down, with test timings (down after 2 s: a
// loaded machine stalls a server for over a second now and then, and a
// failover nobody caused makes a test fail for nothing; failover timeout
// 5 s); the primary's password, if any, is passed on.
// It waits until every Sentinel knows the others and at least replicas
// replicas, so that a failover can be voted and has a replica to promote.
// t.Cleanup kills them.
func StartSentinels(t testing.TB, primary *Redis, n, quorum, replicas int, opts ...SentinelOption) *Sentinels {
	t.Helper()
	SkipIfShort(t, "Redis Sentinels")
	cfg := launch.SentinelConfig{Master: "walcast", Primary: primary.Addr(), Quorum: quorum, MasterPassword: primary.srv.Password(),
		DownAfter: 2 * time.Second}
	for _, opt := range opts {
		opt(&cfg)
	}
	s := &Sentinels{Master: cfg.Master, password: cfg.Password}
	for range n {
		srv, err := launch.StartSentinel(context.Background(), cfg)
		check(t, "start sentinel", err)
		own(t, srv)
		s.list = append(s.list, &Redis{control: control{srv}, srv: srv})
	}
	s.waitKnown(t, n-1, replicas)
	t.Logf("testenv: %d sentinels watching %s at %s", n, cfg.Master, primary.Addr())
	return s
}

// Sentinel returns the i-th Sentinel.
func (s *Sentinels) Sentinel(i int) *Redis { return s.list[i] }

// URL is walcast's redis-sentinel:// URL of the deployment, with the
// primary's password masterPassword ("" for none) and the Sentinels'.
func (s *Sentinels) URL(masterPassword string) string {
	var addrs []string
	for _, r := range s.list {
		addrs = append(addrs, r.Addr())
	}
	u := "redis-sentinel://"
	if masterPassword != "" {
		u += ":" + url.PathEscape(masterPassword) + "@"
	}
	u += strings.Join(addrs, ",") + "/" + s.Master
	if s.password != "" {
		u += "?sentinel_password=" + url.QueryEscape(s.password)
	}
	return u
}

// Primary returns the primary's address as the first Sentinel that
// answers sees it.
func (s *Sentinels) Primary(t testing.TB) string {
	t.Helper()
	for _, r := range s.list {
		c := s.client(r)
		addr, err := c.GetMasterAddrByName(context.Background(), s.Master).Result()
		c.Close()
		if err == nil && len(addr) == 2 {
			return addr[0] + ":" + addr[1]
		}
	}
	t.Fatalf("testenv: no sentinel names the primary of %s", s.Master)
	return ""
}

// AllName reports whether every Sentinel names addr as the primary: a
// failover is over once they agree (a client may still be sent to the old
// primary by one that has not learnt of it).
func (s *Sentinels) AllName(addr string) bool {
	for _, r := range s.list {
		c := s.client(r)
		got, err := c.GetMasterAddrByName(context.Background(), s.Master).Result()
		c.Close()
		if err != nil || len(got) != 2 || got[0]+":"+got[1] != addr {
			return false
		}
	}
	return true
}

func (s *Sentinels) client(r *Redis) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: r.Addr(), Password: s.password})
}

// waitKnown waits until every Sentinel knows others other Sentinels and
// replicas replicas, or fails t.
func (s *Sentinels) waitKnown(t testing.TB, others, replicas int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range s.list {
		c := s.client(r)
		for {
			m, err := c.Master(context.Background(), s.Master).Result()
			if err == nil && atLeast(m["num-other-sentinels"], others) && atLeast(m["num-slaves"], replicas) {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("testenv: sentinel at %s does not know %d sentinels and %d replicas after 30 s (%v %v)\n%s", r.Addr(), others, replicas, m, err, r.LogTail(20))
			}
			time.Sleep(50 * time.Millisecond) // polling a condition
		}
		c.Close()
	}
}

// atLeast reports whether the number v is at least n.
func atLeast(v string, n int) bool {
	i, err := strconv.Atoi(v)
	return err == nil && i >= n
}
