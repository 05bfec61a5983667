package broadcast

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/ctxsleep"
	"github.com/walcast/walcast/internal/netguard"
	"github.com/walcast/walcast/schema"
)

// DefaultStreamKey is the Redis stream walcast appends to and reads from.
const DefaultStreamKey = "walcast:changes"

// Stream entry fields, for decodeEntry and for the scripts (see
// luaFields). Short names. Since the header (fieldHeader) an entry has
// fieldJSON and the header, and a dashboard fieldType and fieldDashboard
// too; the others are read in entries written before it.
const (
	fieldJSON      = "m"
	fieldType      = "t"
	fieldCommittee = "c"
	fieldOwner     = "u"
	fieldAdminOnly = "a"
	fieldDashboard = "k"
)

// RedisBus stores messages in a Redis stream and reads them back for serve
// replicas. The entry id is the message's Position, so an append re-read
// from WAL after a crash is refused by Redis as not newer than the stream's
// top, and no change is ever stored twice.
//
// It holds four connection pools, so that one going silent is noticed and
// replaced without waiting on the others: the main one (appends, history
// reads, checks), the follower's, presence's commands and presence's
// subscription.
type RedisBus struct {
	rdb     redis.UniversalClient
	key     string
	history int64
	log     *slog.Logger

	// The follower's and presence's clients, and each client's open
	// connections, closed at once when one of them went silent.
	follow, presence, pubsub                 redis.UniversalClient
	mainConns, followConns, prConns, psConns *netguard.Tracker
	timeout                                  time.Duration
	onReplaced                               func(conn, reason string)

	healthy atomic.Bool // the last command to Redis succeeded
	start   *startState // set by Preload, read by Follow after it
	// followFailing: the follower's last read failed; it is not healthy
	// until a read succeeds, whatever the other pools do.
	followFailing atomic.Bool
	// readSince: when the follower's blocking read in flight began (unix
	// nanos; 0 when none). A read out for well past its block time is on
	// a silent connection, before its timeout says so.
	readSince atomic.Int64

	// Replicated acknowledgement (see redis_replicas.go).
	minReplicas    int
	replicaTimeout time.Duration
	replicasAckedN atomic.Int64
	replicaLag     atomic.Int64
	replicaShort   atomic.Pointer[ReplicaError] // the last append's shortfall, nil when none

	stored storedPos // the newest entry counted as stored (see redis_lost.go)

	stateMax int // rows of live state kept per table; 0: no state (see redis_state.go)
}

// RedisConfig configures a RedisBus.
type RedisConfig struct {
	URL     string // redis://[user:password@]host:port[/db], redis-cluster://host:port,host:port (see ParseClusterURL) or redis-sentinel:// (see ParseSentinelURL)
	Key     string // stream key; DefaultStreamKey when empty
	History int    // entries kept, approximately (MAXLEN ~)
	Logger  *slog.Logger

	// Timeout bounds every command's reads and writes (default 5 s); the
	// follower's blocking read waits its block time plus Timeout. A
	// connection that does not answer within it is closed and replaced.
	Timeout time.Duration
	// Transport sets TCP keepalive and TCP_USER_TIMEOUT on every
	// connection (zero: the operating system's defaults).
	Transport netguard.Options
	// OnReplaced is called when the connections of a pool were closed
	// because one went silent: conn is "redis", "redis_follow",
	// "redis_presence" or "redis_pubsub", reason "timeout".
	OnReplaced func(conn, reason string)
	// MinReplicas: how many Redis replicas must hold an append (WAIT)
	// before Append reports it stored; 0: the primary alone.
	// ReplicaTimeout bounds that wait (DefaultReplicaTimeout when zero;
	// at most half of Timeout, so that WAIT answers before the read
	// deadline).
	MinReplicas    int
	ReplicaTimeout time.Duration
	// StateMaxRows: rows of live state kept per table (0:
	// DefaultStateMaxRows; negative: no live state).
	StateMaxRows int
}

// redisLogger routes go-redis's own log lines to slog at debug level:
// walcast already logs every Redis failure an operator must act on, with
// context, so the library's unstructured lines are noise at info level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "source", "go-redis")
}

// NewRedisBus parses the URL and returns a bus; it does not connect yet.
func NewRedisBus(cfg RedisConfig) (*RedisBus, error) {
	if err := CheckRedisURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	if cfg.Key == "" {
		cfg.Key = DefaultStreamKey
	}
	if IsClusterURL(cfg.URL) {
		cfg.Key = clusterKey(cfg.Key) // one slot for every key (see redis_cluster.go)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.MinReplicas > 0 && cfg.ReplicaTimeout > cfg.Timeout/2 {
		cfg.Logger.Warn("--redis-replica-timeout is above half of --redis-timeout; using half, so that WAIT answers before the command's deadline",
			"replica_timeout", cfg.ReplicaTimeout, "redis_timeout", cfg.Timeout)
		cfg.ReplicaTimeout = cfg.Timeout / 2
	}
	redis.SetLogger(redisLogger{cfg.Logger})
	b := &RedisBus{key: cfg.Key, history: int64(cfg.History), log: cfg.Logger.With("stream", cfg.Key),
		psConns: &netguard.Tracker{}, timeout: cfg.Timeout, onReplaced: cfg.OnReplaced,
		minReplicas: cfg.MinReplicas, replicaTimeout: cfg.ReplicaTimeout, stateMax: stateMaxRows(cfg.StateMaxRows)}
	b.replicaLag.Store(-1)
	// A read that waited a whole timeout for nothing replaces its pool's
	// connections, whoever sees the error (go-redis retries a command on a
	// new connection by itself). A subscription is quiet by nature: its
	// silence is found by PING (see RedisPresence.listen).
	b.mainConns = b.tracker("redis")
	b.followConns = b.tracker("redis_follow")
	b.prConns = b.tracker("redis_presence")
	b.rdb = newRedisClient(cfg, b.mainConns)
	b.follow = newRedisClient(cfg, b.followConns)
	b.presence = newRedisClient(cfg, b.prConns)
	b.pubsub = newRedisClient(cfg, b.psConns)
	return b, nil
}

// CheckRedisURL parses a Redis URL of any kind walcast reads: redis://,
// rediss://, unix://, redis-cluster:// and redis-sentinel://.
func CheckRedisURL(u string) error {
	var err error
	switch {
	case IsClusterURL(u):
		_, err = ParseClusterURL(u)
	case IsSentinelURL(u):
		_, err = ParseSentinelURL(u)
	default:
		_, err = redis.ParseURL(u)
	}
	return err
}

// newRedisClient returns a client of cfg.URL (already checked) whose
// connections have walcast's timeouts and are tracked by conns.
func newRedisClient(cfg RedisConfig, conns *netguard.Tracker) redis.UniversalClient {
	if IsClusterURL(cfg.URL) {
		return newClusterClient(cfg, conns)
	}
	if IsSentinelURL(cfg.URL) {
		fo, _ := ParseSentinelURL(cfg.URL)
		return newSentinelClient(cfg, fo, conns)
	}
	opts, _ := redis.ParseURL(cfg.URL)
	// 0 is go-redis's default: up to 3 retries of a command on a broken
	// connection or a READONLY/LOADING reply, before walcast's own retries
	// with backoff and logs see the error. (A cluster client uses -1, no
	// retries: its node hook reloads the slot map instead.)
	opts.MaxRetries = 0
	// Shutdown cancels the follower's blocking read instead of waiting it
	// out.
	opts.ContextTimeoutEnabled = true
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.DialTimeout = cfg.Timeout
	opts.Dialer = guardedDialer(cfg, opts.TLSConfig, conns)
	return redis.NewClient(opts)
}

// guardedDialer dials with walcast's TCP settings (and TLS when tlsConfig
// is set), its connections tracked by conns.
func guardedDialer(cfg RedisConfig, tlsConfig *tls.Config, conns *netguard.Tracker) func(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := cfg.Transport.Dialer(cfg.Timeout)
	dial := nd.DialContext
	if tlsConfig != nil {
		td := &tls.Dialer{NetDialer: nd, Config: tlsConfig}
		dial = td.DialContext
	}
	return conns.Wrap(func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) })
}

// Close closes the connection pools.
func (b *RedisBus) Close() error {
	return errors.Join(b.rdb.Close(), b.follow.Close(), b.presence.Close(), b.pubsub.Close())
}

// tracker tracks a pool's connections and replaces them all when one of
// them did not answer within a timeout.
func (b *RedisBus) tracker(name string) *netguard.Tracker {
	// go-redis computes deadlines from a cached clock: allow for its lag.
	t := &netguard.Tracker{MinWait: b.timeout / 2}
	t.OnTimeout = func() { b.replacePool(t, name) }
	return t
}

// replacePool closes every connection of a pool after one of them did
// not answer in time: the path to Redis is probably silent for all of
// them, and each would otherwise cost another timeout. Commands in flight
// on them fail (callers retry); the next command opens a new connection.
func (b *RedisBus) replacePool(conns *netguard.Tracker, name string) {
	n := conns.CloseAll()
	b.log.Warn("a redis connection did not answer within --redis-timeout; closed its pool's connections, the next command opens new ones",
		"conn", name, "closed", n, "timeout", b.timeout)
	if b.onReplaced != nil {
		b.onReplaced(name, "timeout")
	}
}

// Healthy reports whether the last command to Redis succeeded and the
// follower (when running) reads.
func (b *RedisBus) Healthy() bool {
	if since := b.readSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > followBlock+b.timeout/2 {
		return false
	}
	return b.healthy.Load() && !b.followFailing.Load()
}

// followBlock is how long the follower's XREAD blocks.
const followBlock = time.Second

func (b *RedisBus) note(err error) error {
	var re *ReplicaError // Redis answered: its replicas are behind (see ReplicaStatus)
	b.healthy.Store(err == nil || errors.Is(err, redis.Nil) || errors.As(err, &re))
	return err
}

// Check connects and verifies the stream key, for a clear error at start:
// a refused AUTH or a key holding another type stops walcast with the fix.
// It warns when Redis would lose history on restart.
func (b *RedisBus) Check(ctx context.Context) error {
	if err := b.note(b.rdb.Ping(ctx).Err()); err != nil {
		if be := sentinelProblem(err); be != nil {
			return be
		}
		if isAuthError(err) {
			fix := "put the right user and password in --redis-url (redis://user:password@host:port/db, or the primary's in redis-sentinel://user:password@host1:26379,…/<master-name>)"
			if _, ok := b.rdb.(*redis.ClusterClient); ok {
				fix = "put the right user and password in --redis-url (redis-cluster://user:password@host:port,host:port)"
			}
			return &BusError{Problem: "redis refused authentication: " + err.Error(), Fix: fix}
		}
		return fmt.Errorf("ping redis: %w", err)
	}
	if err := b.checkNotCluster(ctx); err != nil {
		return err
	}
	typ, err := b.rdb.Type(ctx, b.key).Result()
	if err != nil {
		return fmt.Errorf("read type of %s: %w", b.key, err)
	}
	if typ != "none" && typ != "stream" {
		return &BusError{Problem: fmt.Sprintf("redis key %s holds a %s, not a stream", b.key, typ), Fix: fmt.Sprintf("remove it (DEL %s) or point walcast at another Redis database", b.key)}
	}
	if cfg, err := b.configGet(ctx, "appendonly"); err == nil && cfg["appendonly"] == "no" {
		b.log.Warn("redis persistence is off (appendonly no): a Redis restart loses the stream, so clients must resync and changes not yet read by a serve replica are lost; set appendonly yes with appendfsync always (or everysec)")
	}
	b.checkReplicas(ctx)
	return nil
}

// BusError is a bus configuration problem that retrying will not fix.
type BusError struct {
	Problem, Fix string
}

func (e *BusError) Error() string { return e.Problem + "; fix: " + e.Fix }

// isAuthError reports a refused AUTH: NOAUTH and WRONGPASS (go-redis's
// own test), and "ERR invalid password" of a Redis before 6.
func isAuthError(err error) bool {
	return redis.IsAuthError(err) || redis.HasErrorPrefix(err, "invalid password") || redis.HasErrorPrefix(err, "invalid username-password")
}

// isNoSuchKey reports XINFO's answer for a stream that does not exist.
func isNoSuchKey(err error) bool { return redis.HasErrorPrefix(err, "no such key") }

// Head returns the position of the newest stored message.
func (b *RedisBus) Head(ctx context.Context) (schema.Position, error) {
	res, err := b.rdb.XRevRangeN(ctx, b.key, "+", "-", 1).Result()
	if b.note(err) != nil {
		return schema.Position{}, fmt.Errorf("read head of %s: %w", b.key, err)
	}
	if len(res) == 0 {
		return schema.Position{}, nil
	}
	return schema.ParsePosition(res[0].ID)
}

// Since returns up to limit messages after pos, oldest first.
func (b *RedisBus) Since(ctx context.Context, pos schema.Position, limit int) ([]*schema.Message, error) {
	info, err := b.rdb.XInfoStream(ctx, b.key).Result()
	if isNoSuchKey(err) {
		if pos.IsZero() {
			return nil, b.note(nil)
		}
		return nil, ErrUnknownPosition
	}
	if b.note(err) != nil {
		return nil, fmt.Errorf("read %s: %w", b.key, err)
	}
	if !pos.IsZero() {
		earlier, err := b.earlier(ctx)
		if err != nil {
			return nil, err
		}
		if !earlier.IsZero() && !earlier.Less(pos) {
			return nil, ErrTooOld // an id of an earlier epoch
		}
	}
	last, _ := schema.ParsePosition(info.LastGeneratedID)
	if last.Less(pos) {
		return nil, ErrUnknownPosition
	}
	if trimmedAfter(info, pos) {
		return nil, ErrTooOld
	}
	res, err := b.rdb.XRangeN(ctx, b.key, "("+pos.String(), "+", int64(limit)).Result()
	if b.note(err) != nil {
		return nil, fmt.Errorf("read %s after %s: %w", b.key, pos, err)
	}
	out := make([]*schema.Message, 0, len(res))
	for _, x := range res {
		m, err := fromEntry(x)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func fromEntry(x redis.XMessage) (*schema.Message, error) { return decodeEntry(x, nil) }

// Follow reads the stream after its current head and publishes every
// message to hub, in order, until ctx ends. It survives Redis outages:
// it retries with capped backoff and continues after the last message it
// read, so the hub sees no gap and no duplicate.
func (b *RedisBus) Follow(ctx context.Context, hub *Hub) error {
	st := &followState{backoff: followBackoffMin}
	if b.history > 0 {
		hub.LimitResume(int(b.history)) // the window answers no position the stream calls too old
	}
	if pre := b.start; pre != nil {
		st.last, st.started, st.epoch = pre.head, true, pre.epoch
		b.seedOrWarn(ctx, hub)
		b.log.Info("following stream", "from", st.last.String())
	}
	for ctx.Err() == nil {
		if !st.started && !b.startFollowing(ctx, hub, st) {
			continue // it waited its backoff, or ctx ended
		}
		b.followRound(ctx, hub, st)
	}
	return nil
}

// followState is where the follower stands between its rounds.
type followState struct {
	last   schema.Position
	epoch  string          // the stream's epoch counter as last read
	lossAt schema.Position // last as of the latest "fell behind" resync
	// behind: the stream ended before last when last read (a failover to
	// a replica that lacked the newest entries); see holdBehind.
	behind bool
	// lastChange: the newest change (not dashboard) published, zero for
	// none yet: what caughtUp looks for. A dashboard entry may vanish in
	// a failover for good: capture places the next ones after the new
	// primary's head, and each is a snapshot, never replayed.
	lastChange schema.Position
	started    bool
	backoff    time.Duration
	// pack holds the frames of the changes published to the hub's window
	// (see jsonpack.go).
	pack jsonPack
}

// The follower's backoff after a failure: doubled at each, up to the max.
const (
	followBackoffMin = 100 * time.Millisecond
	followBackoffMax = 5 * time.Second
)

// retryAfter logs a failed step of the follower and waits its backoff,
// which then doubles. args go after err in the log line.
func (b *RedisBus) retryAfter(ctx context.Context, st *followState, msg string, err error, args ...any) {
	b.log.Error(msg, append(append([]any{"err", err}, args...), "retry_in", st.backoff)...)
	if !ctxsleep.Sleep(ctx, st.backoff) {
		return
	}
	st.backoff = min(st.backoff*2, followBackoffMax)
}

// seedOrWarn sends the newest dashboards to hub; connections get them at
// their next update when that fails.
func (b *RedisBus) seedOrWarn(ctx context.Context, hub *Hub) {
	if err := b.seedDashboards(ctx, hub); err != nil {
		b.log.Warn("cannot read the newest dashboards; connections get them at their next update", "err", err)
	}
}

// startFollowing reads the stream's head and epoch and starts hub there.
// It returns false after a failure (it waited its backoff).
func (b *RedisBus) startFollowing(ctx context.Context, hub *Hub, st *followState) bool {
	head, err := b.Head(ctx)
	if err != nil {
		b.retryAfter(ctx, st, "cannot read the stream head; retrying", err)
		return false
	}
	ep, earlier, err := b.epoch(ctx)
	if err != nil {
		b.retryAfter(ctx, st, "cannot read the stream's epoch; retrying", err)
		return false
	}
	st.last, st.started, st.epoch = head, true, ep
	hub.Start(head)
	hub.ForgetEarlier(earlier)
	b.seedOrWarn(ctx, hub)
	b.log.Info("following stream", "from", head.String())
	return true
}

// followRound reads once after st.last and publishes what it read, after
// handling a new epoch or history lost or trimmed under the follower.
func (b *RedisBus) followRound(ctx context.Context, hub *Hub, st *followState) {
	r, err := b.readAfter(ctx, st.last)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		b.note(err)
		b.retryAfter(ctx, st, "reading the stream failed; retrying from the last message read", err, "last", st.last.String())
		return
	}
	b.note(nil)
	st.backoff = followBackoffMin
	if e, earlier := epochFields(r.epoch); e != st.epoch {
		// Capture discarded the stream (a new epoch): what this read
		// returned may be of either; read the new stream from its start.
		b.log.Warn("the stream began a new epoch (its history was discarded: capture's log says why); clients must resync", "earlier_ids_up_to", earlier.String())
		hub.NewEpoch("the server's history was discarded (new epoch): refetch, then follow", earlier)
		st.epoch, st.last, st.lastChange, st.behind = e, schema.Position{}, schema.Position{}, false
		return
	}
	if !b.checkHistory(ctx, hub, st, r) {
		return
	}
	b.publishRead(hub, st, r.streams)
}

// followRead is what one follower round read.
type followRead struct {
	streams []redis.XStream
	info    *redis.XInfoStream // the stream before the read
	gone    bool               // there was no stream
	epoch   []any              // HMGET epoch earlier after the read
}

// readAfter is one round trip on the follower's own connection: the
// stream's state before the read (to tell whether entries after last are
// gone), the read, and the epoch after it (unchanged then: every entry
// read is of this epoch). The blocking read waits its block time and then
// Timeout for the answer: a silent connection fails here instead of
// blocking for good.
func (b *RedisBus) readAfter(ctx context.Context, last schema.Position) (followRead, error) {
	rctx, cancel := context.WithTimeout(ctx, followBlock+b.timeout)
	b.readSince.Store(time.Now().UnixNano())
	pipe := b.follow.Pipeline()
	xi := pipe.XInfoStream(rctx, b.key)
	xr := pipe.XRead(rctx, &redis.XReadArgs{Streams: []string{b.key, last.String()}, Count: 1000, Block: followBlock})
	ep := pipe.HMGet(rctx, b.originKey(), "epoch", "earlier")
	_, _ = pipe.Exec(rctx)
	b.readSince.Store(0)
	cancel()
	res, err := xr.Result()
	b.followFailing.Store(err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil)
	if errors.Is(err, redis.Nil) {
		res, err = nil, nil
	}
	if err == nil {
		err = ep.Err()
	}
	info, ierr := xi.Result()
	gone := isNoSuchKey(ierr)
	if err == nil && ierr != nil && !gone {
		err = ierr
	}
	return followRead{streams: res, info: info, gone: gone, epoch: ep.Val()}, err
}

// checkHistory compares the stream, as it was before the read, with where
// the follower stands. It returns false when this read is to be ignored:
// the stream is gone or ends before st.last (see holdBehind). Entries
// trimmed after st.last make hub's clients resync (once per gap), and the
// read is published.
func (b *RedisBus) checkHistory(ctx context.Context, hub *Hub, st *followState, r followRead) bool {
	if st.last.IsZero() {
		return true
	}
	top := schema.Position{}
	if !r.gone {
		top, _ = schema.ParsePosition(r.info.LastGeneratedID)
	}
	switch {
	case top.Less(st.last):
		// The stream is gone or ends before st.last: a failover, or a
		// restart without persistence.
		b.holdBehind(st, top)
		return false
	case st.behind && !b.caughtUp(ctx, hub, st):
		return false
	case trimmedAfter(r.info, st.last) && st.lossAt != st.last:
		st.lossAt = st.last // said once, not every round until a read passes the gap
		// Entries after the last one read were gone before this read: its
		// clients cannot be told what they were.
		b.log.Error("this replica fell further behind than the stream's history, or redis lost entries; clients must resync. Raise --history or add serve capacity", "last", st.last.String())
		hub.Resync("the server fell behind its history")
	}
	return true
}

// holdBehind handles a stream that is gone or ends before the last entry
// the follower read: after a failover to a replica that lacked the newest
// entries, or a restart without persistence. Entries capture had not
// confirmed (with --redis-min-replicas 1 a confirmed entry is on the
// replica) it appends again from WAL with the same ids and contents; this
// replica's clients have them already. The follower publishes nothing
// until the stream reaches st.last again. Should confirmed entries be lost
// instead, capture begins a new epoch at its next append, which the
// follower's epoch check turns into resync_required. Reading the stream
// from its start instead would send clients its whole history again.
func (b *RedisBus) holdBehind(st *followState, top schema.Position) {
	if st.behind {
		return
	}
	st.behind = true
	b.log.Warn("the stream on redis ends before the last entry this replica read (a failover to a replica that lacked the newest entries, or a restart without persistence?); waiting until capture has appended them again or started a new epoch",
		"last", st.last.String(), "stream_ends_at", top.String())
}

// caughtUp is called when the stream reaches st.last again after
// holdBehind: it reports whether the follower may go on. The newest change
// it sent must be there: when it is not, the new primary's history
// differs from what this replica sent (entries lost that capture did not
// append again), so hub's clients must resync; the follower goes on after
// st.last. A failed check is retried at the next round.
func (b *RedisBus) caughtUp(ctx context.Context, hub *Hub, st *followState) bool {
	if st.lastChange.IsZero() {
		st.behind = false
		return true // no change sent, none to miss
	}
	want := st.lastChange.String()
	res, err := b.follow.XRangeN(ctx, b.key, want, want, 1).Result()
	if err != nil {
		b.log.Warn("cannot check the stream after a failover; retrying", "err", err)
		return false
	}
	st.behind = false
	if len(res) == 1 {
		b.log.Info("the stream holds the last change this replica sent again: nothing was lost", "last_change", want)
		return true
	}
	b.log.Error("the stream on the new redis primary does not hold the last change this replica sent: changes were lost; clients must resync", "last_change", want)
	hub.Resync("the bus lost history")
	return true
}

// publishRead publishes the entries read after st.last, in order, and
// moves st.last to the newest; unreadable entries are logged and skipped.
func (b *RedisBus) publishRead(hub *Hub, st *followState, streams []redis.XStream) {
	for _, s := range streams {
		batch := make([]*schema.Message, 0, len(s.Messages))
		for _, x := range s.Messages {
			m, err := decodeEntry(x, &st.pack)
			if err != nil {
				b.log.Error("skipping unreadable stream entry", "err", err)
				continue
			}
			if !st.last.Less(m.Pos) {
				continue
			}
			st.last = m.Pos
			if m.DashboardKey == "" {
				st.lastChange = m.Pos
			}
			batch = append(batch, m)
		}
		hub.Publish(batch)
	}
}

// trimmedAfter reports whether entries after pos may be missing from the
// stream: pos is older than an entry XDEL removed, or older than the first
// entry the stream holds. An id a client saw was an entry of this stream,
// so an id before the first one was trimmed away, or belongs to history a
// Redis restart without persistence lost; either way the entries after it
// cannot all be replayed. The zero position (since=0-0, "from the
// beginning") is too old once the stream lost any entry: entries-added
// (Redis 7) counts every entry ever added, so it exceeds the length after
// a trim. Without that count (Redis before 7) a stream that holds entries
// cannot prove it holds them all. This errs towards resync, never towards
// a silent gap.
func trimmedAfter(info *redis.XInfoStream, pos schema.Position) bool {
	if deleted, err := schema.ParsePosition(info.MaxDeletedEntryID); err == nil && pos.Less(deleted) {
		return true
	}
	if pos.IsZero() {
		return info.Length > 0 && info.EntriesAdded != info.Length
	}
	first, err := schema.ParsePosition(info.FirstEntry.ID)
	if err != nil {
		first, err = schema.ParsePosition(info.RecordedFirstEntryID)
	}
	return err == nil && pos.Less(first)
}
