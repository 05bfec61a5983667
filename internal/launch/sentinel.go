package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SentinelConfig says what a Sentinel watches and how fast it fails over.
type SentinelConfig struct {
	// Master is the name the primary is monitored under (the URL's
	// <master-name>); Primary its host:port.
	Master, Primary string
	// Quorum: how many Sentinels must agree that the primary is down.
	Quorum int
	// DownAfter: how long the primary may not answer before it is taken for
	// down; FailoverTimeout bounds a failover (and spaces out retries).
	// Zero: 1 s and 5 s, short for tests (Sentinel's defaults are 30 s
	// and 3 minutes).
	DownAfter, FailoverTimeout time.Duration
	// Password: the Sentinels' own (requirepass, and the one they use with
	// each other); MasterPassword: the primary's and its replicas'
	// (auth-pass). Empty: none.
	Password, MasterPassword string
}

// StartSentinel runs redis-server --sentinel on a free 127.0.0.1 port, in
// its own temporary folder with a generated sentinel.conf (Sentinel
// rewrites it with what it learns: replicas, other Sentinels, the current
// primary), and waits until it answers PING. Its Kill, Start and Close are
// a Redis's.
func StartSentinel(ctx context.Context, cfg SentinelConfig) (*Redis, error) {
	if cfg.Master == "" || cfg.Primary == "" {
		return nil, errors.New("start sentinel: the master name and the primary's address are required")
	}
	if _, _, err := net.SplitHostPort(cfg.Primary); err != nil {
		return nil, fmt.Errorf("start sentinel: primary %q: %w", cfg.Primary, err)
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = 1
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = time.Second
	}
	if cfg.FailoverTimeout <= 0 {
		cfg.FailoverTimeout = 5 * time.Second
	}
	var rc RedisConfig
	if cfg.Password != "" {
		rc.Args = []string{"--requirepass", cfg.Password} // for ping
	}
	return startRedis(ctx, rc, &cfg)
}

// sentinelArguments writes sentinel.conf on the first start (a restart
// keeps what Sentinel wrote into it) and returns the arguments; the port
// is given on the command line, which wins over the file.
func (r *Redis) sentinelArguments() []string {
	conf := filepath.Join(r.dir, "sentinel.conf")
	if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
		// An error surfaces as the server's own: it cannot read its config.
		_ = os.WriteFile(conf, []byte(r.sentinelConf()), 0o600)
	}
	return []string{conf, "--sentinel", "--port", strconv.Itoa(r.port)}
}

// sentinelConf is the first sentinel.conf.
func (r *Redis) sentinelConf() string {
	c := r.sentinel
	host, port, _ := net.SplitHostPort(c.Primary)
	lines := []string{
		"bind 127.0.0.1",
		"daemonize no",
		"dir " + r.dir,
		fmt.Sprintf("sentinel monitor %s %s %s %d", c.Master, host, port, c.Quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", c.Master, c.DownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", c.Master, c.FailoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", c.Master),
	}
	if c.MasterPassword != "" {
		lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", c.Master, c.MasterPassword))
	}
	if c.Password != "" {
		lines = append(lines, "requirepass "+c.Password, "sentinel sentinel-pass "+c.Password)
	}
	return strings.Join(lines, "\n") + "\n"
}
