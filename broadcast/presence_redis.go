package broadcast

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/ctxsleep"
	"github.com/walcast/walcast/internal/netguard"
)

// RedisPresence shares presence between serve replicas through Redis:
//
//   - each replica keeps its users in a hash, <stream>:presence:r:<replica>
//     (field user id, value the user's entry), and its id in the sorted set
//     <stream>:presence:replicas scored by when it expires. It rewrites both
//     every TTL/3; the hash expires after TTL, so the users of a replica
//     that crashed vanish within about TTL + TTL/3;
//   - a change of a local user is written to the hash and announced on the
//     channel <stream>:presence, so other replicas apply it at once;
//   - every TTL/3 each replica reads all live replicas' hashes, which also
//     drops the users of replicas that expired;
//   - typing frames travel on <stream>:presence:typing and are stored
//     nowhere.
type RedisPresence struct {
	bus      *RedisBus
	rdb      redis.UniversalClient
	pr       *Presence
	replica  string
	ttl      time.Duration
	log      *slog.Logger
	prefix   string
	channel  string
	typingCh string

	mu      sync.Mutex
	dirty   map[int64]*presenceEntry // local users to write; nil entry: left
	typings []typingEvent
	wake    chan struct{}
}

// DefaultPresenceTTL is how long a replica's presence outlives it.
const DefaultPresenceTTL = 15 * time.Second

// PresenceLink connects pr to the other replicas sharing this Redis.
// Start it with Run.
func (b *RedisBus) PresenceLink(pr *Presence, ttl time.Duration) *RedisPresence {
	if ttl <= 0 {
		ttl = DefaultPresenceTTL
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	prefix := b.key + ":presence"
	l := &RedisPresence{
		bus: b, rdb: b.presence, pr: pr, replica: hex.EncodeToString(id), ttl: ttl,
		prefix: prefix, channel: prefix, typingCh: prefix + ":typing",
		dirty: map[int64]*presenceEntry{}, wake: make(chan struct{}, 1),
	}
	l.log = b.log.With("presence_replica", l.replica)
	pr.mu.Lock()
	pr.link = l
	pr.mu.Unlock()
	return l
}

func (l *RedisPresence) hashKey(replica string) string { return l.prefix + ":r:" + replica }
func (l *RedisPresence) replicasKey() string           { return l.prefix + ":replicas" }

// presenceNote is a change announced on the channel.
type presenceNote struct {
	Replica string         `json:"r"`
	UserID  int64          `json:"u,omitempty"`
	Entry   *presenceEntry `json:"e,omitempty"` // nil: the user left the replica
	Gone    bool           `json:"gone,omitempty"`
}

// changed implements presenceLink.
func (l *RedisPresence) changed(user int64, e *presenceEntry) {
	l.mu.Lock()
	l.dirty[user] = e
	l.mu.Unlock()
	l.signal()
}

// typing implements presenceLink.
func (l *RedisPresence) typing(t typingEvent) {
	t.Replica = l.replica
	l.mu.Lock()
	if len(l.typings) < 1000 {
		l.typings = append(l.typings, t)
	}
	l.mu.Unlock()
	l.signal()
}

func (l *RedisPresence) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run shares presence until ctx ends, then removes this replica's users.
func (l *RedisPresence) Run(ctx context.Context) error {
	msgs := make(chan *redis.Message, 256)
	resubscribed := make(chan struct{}, 1)
	listenCtx, stopListen := context.WithCancel(ctx)
	listenDone := make(chan struct{})
	go func() {
		defer close(listenDone)
		l.listen(listenCtx, msgs, resubscribed)
	}()
	defer func() {
		stopListen()
		<-listenDone
	}()
	beat := time.NewTicker(l.ttl / 3)
	defer beat.Stop()
	l.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			l.goodbye(context.WithoutCancel(ctx))
			return nil
		case <-l.wake:
			l.flush(ctx)
		case <-beat.C:
			l.heartbeat(ctx)
		case <-resubscribed:
			// Announcements sent while the old subscription was silent
			// are lost: read every replica's state again now.
			l.heartbeat(ctx)
		case m := <-msgs:
			l.receive(m)
		}
	}
}

// listen receives the presence channels' messages into msgs until ctx
// ends. go-redis's own channel reader waits for ever on a connection that
// went silent, so listen reads with a deadline: after a quiet ttl/3 it
// sends a PING, and a subscription that answers neither within the Redis
// timeout is closed and made anew (resubscribed is then signalled).
func (l *RedisPresence) listen(ctx context.Context, msgs chan<- *redis.Message, resubscribed chan<- struct{}) {
	quiet := l.ttl / 3
	first := true
	for ctx.Err() == nil {
		ps := l.bus.pubsub.Subscribe(ctx, l.channel, l.typingCh)
		if !first {
			select {
			case resubscribed <- struct{}{}:
			default:
			}
		}
		first = false
		awaiting := false // a PING is out
		for ctx.Err() == nil {
			wait := quiet
			if awaiting {
				wait = l.bus.timeout
			}
			msg, err := ps.ReceiveTimeout(ctx, wait)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				if !netguard.IsTimeout(err) {
					// go-redis reconnects the subscription by itself, to
					// the node its slot map names: in a cluster, after a
					// crash, that map must learn the slot's new owner.
					l.log.Debug("presence subscription failed; retrying", "err", err)
					reloadSlots(l.bus.pubsub)
					if !ctxsleep.Sleep(ctx, 100*time.Millisecond) {
						break
					}
					continue
				}
				if awaiting {
					l.bus.replacePool(l.bus.psConns, "redis_pubsub")
					break
				}
				if err := ps.Ping(ctx); err != nil && ctx.Err() == nil {
					l.log.Debug("presence subscription ping failed", "err", err)
				}
				awaiting = true
				continue
			}
			awaiting = false
			if m, ok := msg.(*redis.Message); ok {
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			}
		}
		ps.Close()
	}
}

// flush writes and announces the local changes and typing frames queued.
func (l *RedisPresence) flush(ctx context.Context) {
	l.mu.Lock()
	dirty, typings := l.dirty, l.typings
	l.dirty, l.typings = map[int64]*presenceEntry{}, nil
	l.mu.Unlock()
	if len(dirty) == 0 && len(typings) == 0 {
		return
	}
	pipe := l.rdb.Pipeline()
	hash := l.hashKey(l.replica)
	for u, e := range dirty {
		field := strconv.FormatInt(u, 10)
		if e == nil {
			pipe.HDel(ctx, hash, field)
		} else {
			b, _ := json.Marshal(e)
			pipe.HSet(ctx, hash, field, b)
		}
		note, _ := json.Marshal(presenceNote{Replica: l.replica, UserID: u, Entry: e})
		pipe.Publish(ctx, l.channel, note)
	}
	if len(dirty) > 0 {
		pipe.PExpire(ctx, hash, l.ttl)
	}
	for _, t := range typings {
		b, _ := json.Marshal(t)
		pipe.Publish(ctx, l.typingCh, b)
	}
	if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
		// The next heartbeat rewrites every local user.
		l.log.Warn("sharing presence through redis failed; retrying at the next heartbeat", "err", err)
	}
}

// heartbeat rewrites this replica's users with a fresh expiry and reads
// every live replica's.
func (l *RedisPresence) heartbeat(ctx context.Context) {
	self := l.pr.selfEntries()
	now := time.Now()
	hash := l.hashKey(l.replica)
	pipe := l.rdb.TxPipeline()
	pipe.Del(ctx, hash)
	if len(self) > 0 {
		fields := make([]any, 0, 2*len(self))
		for u, e := range self {
			b, _ := json.Marshal(e)
			fields = append(fields, strconv.FormatInt(u, 10), b)
		}
		pipe.HSet(ctx, hash, fields...)
		pipe.PExpire(ctx, hash, l.ttl)
	}
	pipe.ZAdd(ctx, l.replicasKey(), redis.Z{Score: float64(now.Add(l.ttl).UnixMilli()), Member: l.replica})
	pipe.ZRemRangeByScore(ctx, l.replicasKey(), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	pipe.PExpire(ctx, l.replicasKey(), 2*l.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		if ctx.Err() == nil {
			l.log.Warn("presence heartbeat failed", "err", err)
		}
		return
	}
	replicas, err := l.rdb.ZRangeByScore(ctx, l.replicasKey(), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		l.log.Warn("reading presence replicas failed", "err", err)
		return
	}
	read := l.rdb.Pipeline()
	cmds := map[string]*redis.MapStringStringCmd{}
	for _, r := range replicas {
		if r != l.replica {
			cmds[r] = read.HGetAll(ctx, l.hashKey(r))
		}
	}
	if len(cmds) > 0 {
		if _, err := read.Exec(ctx); err != nil {
			l.log.Warn("reading presence failed", "err", err)
			return
		}
	}
	all := make(map[string]map[int64]*presenceEntry, len(cmds))
	for r, cmd := range cmds {
		users := map[int64]*presenceEntry{}
		for field, v := range cmd.Val() {
			u, err := strconv.ParseInt(field, 10, 64)
			var e presenceEntry
			if err != nil || json.Unmarshal([]byte(v), &e) != nil {
				continue
			}
			e.UserID = u
			users[u] = &e
		}
		if len(users) > 0 {
			all[r] = users
		}
	}
	l.pr.replaceRemote(all)
}

// receive applies another replica's announcement.
func (l *RedisPresence) receive(m *redis.Message) {
	switch m.Channel {
	case l.channel:
		var n presenceNote
		if json.Unmarshal([]byte(m.Payload), &n) != nil || n.Replica == l.replica {
			return
		}
		if n.Gone {
			l.pr.dropReplica(n.Replica)
			return
		}
		if n.Entry != nil {
			n.Entry.UserID = n.UserID
		}
		l.pr.setRemote(n.Replica, n.UserID, n.Entry)
	case l.typingCh:
		var t typingEvent
		if json.Unmarshal([]byte(m.Payload), &t) != nil || t.Replica == l.replica {
			return
		}
		l.pr.deliverTyping(t)
	}
}

// goodbye removes this replica's users at once on a clean shutdown.
func (l *RedisPresence) goodbye(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	note, _ := json.Marshal(presenceNote{Replica: l.replica, Gone: true})
	pipe := l.rdb.Pipeline()
	pipe.Del(ctx, l.hashKey(l.replica))
	pipe.ZRem(ctx, l.replicasKey(), l.replica)
	pipe.Publish(ctx, l.channel, note)
	if _, err := pipe.Exec(ctx); err != nil {
		l.log.Warn("removing this replica's presence failed; it expires by itself", "err", err)
	}
}
