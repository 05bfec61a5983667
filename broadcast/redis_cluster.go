package broadcast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/netguard"
)

// Redis Cluster. A redis-cluster:// URL lists some of the cluster's nodes;
// the client learns the rest and which node owns which hash slot.
//
// Every walcast key derives from the stream key (b.key + ":..."), and in a
// cluster the stream key is put in a hash tag, {walcast:changes}, so that
// every key shares one slot: the append script, the epoch's transaction
// and presence's pipelines each touch several keys, which a cluster
// allows only within one slot. All of walcast's data therefore lives on
// one primary (and its replicas): a cluster gives walcast failover, not
// write scaling. The tag applies only in cluster mode, so that a single
// Redis keeps the keys, and the history, it has.
//
// Commands about one node rather than a key (WAIT, INFO replication,
// CONFIG GET) run on the primary that owns that slot (see primary): a
// cluster client would send them to any node. Pub/sub stays classic
// SUBSCRIBE/PUBLISH: a cluster forwards every message to every node, so a
// subscription on any node hears it and survives the slot moving; sharded
// SSUBSCRIBE would drop the subscribers at each failover or migration of
// the slot, for traffic (presence) too small to need sharding.

// The schemes of a Redis Cluster URL: plain and TLS.
const (
	clusterScheme    = "redis-cluster://"
	clusterTLSScheme = "rediss-cluster://"
)

// IsClusterURL reports whether u names a Redis Cluster (redis-cluster://
// or, with TLS, rediss-cluster://).
func IsClusterURL(u string) bool {
	return strings.HasPrefix(u, clusterScheme) || strings.HasPrefix(u, clusterTLSScheme)
}

// ParseClusterURL reads
// redis-cluster://[user:password@]host1:port1,host2:port2[/0][?option=value]
// (rediss-cluster:// for TLS) into go-redis's cluster options. The options
// are go-redis's cluster URL options (dial_timeout=3s, ...). A database
// other than 0 is refused: a cluster has only database 0. Errors never
// quote the URL, which may hold a password.
func ParseClusterURL(u string) (*redis.ClusterOptions, error) {
	scheme, rest := "redis", ""
	switch {
	case strings.HasPrefix(u, clusterScheme):
		rest = u[len(clusterScheme):]
	case strings.HasPrefix(u, clusterTLSScheme):
		scheme, rest = "rediss", u[len(clusterTLSScheme):]
	default:
		return nil, errors.New("want redis-cluster://[user:password@]host:port[,host:port...]")
	}
	// The user info ends at the last '@' (a password may hold '@').
	userinfo := ""
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo, rest = rest[:at+1], rest[at+1:]
	}
	hosts, query, _ := strings.Cut(rest, "?")
	hosts, db, _ := strings.Cut(hosts, "/")
	if db != "" && db != "0" {
		return nil, errors.New("a Redis Cluster has only database 0: remove /" + db)
	}
	addrs, err := clusterAddrs(hosts)
	if err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, errors.New("unreadable options after '?'")
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	opts, err := redis.ParseClusterURL(scheme + "://" + userinfo + addrs[0] + "?" + q.Encode())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the URL, password included
		}
		return nil, fmt.Errorf("read cluster url: %w", err)
	}
	return opts, nil
}

// clusterAddrs reads the comma-separated host:port list of a cluster URL.
func clusterAddrs(hosts string) ([]string, error) {
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, fmt.Errorf("cluster node %q: want host:port", h)
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("cluster node %q: bad port", h)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	return addrs, nil
}

// clusterKey returns the stream key to use in a cluster: key itself when
// it already holds a hash tag (a non-empty {...}), else key wrapped in
// one, so that every key derived from it shares its slot.
func clusterKey(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key
		}
	}
	return "{" + key + "}"
}

// newClusterClient returns a client of the cluster at cfg.URL (already
// checked), with walcast's timeouts and every node's connections tracked
// by conns.
func newClusterClient(cfg RedisConfig, conns *netguard.Tracker) *redis.ClusterClient {
	opts, _ := ParseClusterURL(cfg.URL)
	opts.MaxRetries = -1 // walcast retries with its own backoff and logs
	// MOVED and ASK are followed (MaxRedirects): a read finds the slot's
	// new owner after a failover or a migration.
	opts.ContextTimeoutEnabled = true
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.DialTimeout = cfg.Timeout
	opts.Dialer = guardedDialer(cfg, opts.TLSConfig, conns)
	// One dial per attempt: a crashed primary refuses at once, and each
	// failed attempt reloads the slot map (see slotReloader) instead of
	// dialling it again.
	opts.DialerRetries = 1
	cc := redis.NewClusterClient(opts)
	cc.OnNewNode(func(node *redis.Client) { node.AddHook(slotReloader{cc}) })
	return cc
}

// slotReloader, a hook on every node's client, has the cluster client
// reload its slot map after a command to that node failed without an
// answer (a refused or lost connection, a timeout) or was redirected
// (MOVED, ASK, TRYAGAIN, CLUSTERDOWN). go-redis reloads it after MOVED
// answers to its own commands, but a crashed primary answers nothing, so
// the client would send its slots' commands there until the periodic
// reload, a minute later; and appends, sent to the node primary returned,
// get their MOVED themselves. Reloads are coalesced by the client.
type slotReloader struct{ cc *redis.ClusterClient }

func (h slotReloader) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slotReloader) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.failed(ctx, err)
		return err
	}
}

func (h slotReloader) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		seen := err
		for _, c := range cmds { // a pipeline's answers are its commands'
			if seen == nil && c.Err() != nil && slotMoved(c.Err()) {
				seen = c.Err()
			}
		}
		h.failed(ctx, seen)
		return err
	}
}

func (h slotReloader) failed(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil || errors.Is(err, redis.Nil) {
		return
	}
	var answer redis.Error // Redis answered: the node is there
	if errors.As(err, &answer) && !slotMoved(err) {
		return
	}
	h.cc.ReloadState(context.Background())
}

// slotMoved reports an answer that says a slot is served elsewhere, or
// not yet.
func slotMoved(err error) bool {
	for _, p := range []string{"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// primary returns the client whose commands reach the primary that holds
// walcast's keys: the bus's own client for a single Redis; in a cluster,
// the node that owns the keys' slot now. Commands about a node rather than
// a key (WAIT, INFO replication, CONFIG GET), and a pipeline that must
// run on one connection (appends followed by WAIT), run there.
func (b *RedisBus) primary(ctx context.Context) (redis.UniversalClient, error) {
	cc, ok := b.rdb.(*redis.ClusterClient)
	if !ok {
		return b.rdb, nil
	}
	c, err := cc.MasterForKey(ctx, b.key)
	if err != nil {
		return nil, fmt.Errorf("find the cluster node that holds %s: %w", b.key, err)
	}
	return c, nil
}

// reloadSlots has c, when it is a cluster client, reload its slot map in
// the background.
func reloadSlots(c redis.UniversalClient) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		cc.ReloadState(context.Background())
	}
}

// checkNotCluster refuses a plain redis:// URL that points at a cluster
// node: walcast's keys would lack their hash tag, and its scripts fail as
// soon as the cluster spreads them over several nodes.
func (b *RedisBus) checkNotCluster(ctx context.Context) error {
	if _, ok := b.rdb.(*redis.ClusterClient); ok {
		return nil
	}
	info, err := b.rdb.Info(ctx, "cluster").Result()
	if err != nil || !strings.Contains(info, "cluster_enabled:1") {
		return nil // not a cluster, or a Redis that does not say
	}
	return &BusError{Problem: "--redis-url points at a Redis Cluster node with redis://",
		Fix: "use redis-cluster://host:port[,host:port...]: walcast then keeps its keys in one hash slot"}
}

// configGet reads a setting of the primary that holds walcast's keys.
func (b *RedisBus) configGet(ctx context.Context, name string) (map[string]string, error) {
	c, err := b.primary(ctx)
	if err != nil {
		return nil, err
	}
	return c.ConfigGet(ctx, name).Result()
}

// info reads a section of INFO from the primary that holds walcast's keys.
func (b *RedisBus) info(ctx context.Context, section string) (string, error) {
	c, err := b.primary(ctx)
	if err != nil {
		return "", err
	}
	return c.Info(ctx, section).Result()
}
