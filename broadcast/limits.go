package broadcast

import (
	"net/netip"
	"sync"
	"time"
)

// Limits bound who may connect, so a reconnect storm or one misbehaving
// user cannot exhaust the server. Zero fields take their defaults.
type Limits struct {
	MaxConnections int     // total; default 20000
	MaxPerUser     int     // per user_id; default 32 (tabs, devices)
	ConnectRate    float64 // new connections per second per client address; default 20
	ConnectBurst   int     // bucket size per client address; default 40
	// MaxTrackedAddrs bounds the connect limiter's memory: how many client
	// addresses (IPv4 addresses, IPv6 /64s) it tracks at once; default
	// 65536. See rateLimiter for what happens beyond it.
	MaxTrackedAddrs int
}

func (l Limits) withDefaults() Limits {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 20000
	}
	if l.MaxPerUser <= 0 {
		l.MaxPerUser = 32
	}
	if l.ConnectRate <= 0 {
		l.ConnectRate = 20
	}
	if l.ConnectBurst <= 0 {
		l.ConnectBurst = 40
	}
	if l.MaxTrackedAddrs <= 0 {
		l.MaxTrackedAddrs = 65536
	}
	return l
}

// addrKey is the unit of the connect limiter: the part of an address one
// client controls. An IPv4 address (an IPv4-mapped IPv6 address counts as
// the IPv4 one) is its own key; an IPv6 address is grouped by its /64,
// since a single host is normally given a whole /64 and can pick any
// address inside it (privacy addresses rotate the low bits). An invalid
// address gives the zero Prefix, so all of them share one bucket.
func addrKey(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// rateLimiter is a token bucket per client key (see addrKey), with a
// bounded number of keys.
//
// The bound: a bucket that has refilled carries no information (a new one
// would be identical), so forgetting it is lossless; the limiter forgets
// such buckets once a minute, and at most once a second when the table is
// full and a new key arrives. A bucket that is not full is never forgotten
// or evicted: evicting it would hand its owner a fresh burst, so whoever
// can make many new keys (an IPv6 /48 holds 65,536 /64s) could reset
// another client's bucket, or their own, at will. When the table is still
// full, new keys share one overflow bucket with the same rate and burst:
// under a flood from more distinct addresses than the table holds, those
// newcomers are limited together, while every address already tracked
// keeps its own bucket and no bucket is ever reset.
type rateLimiter struct {
	rate    float64
	burst   float64
	maxKeys int

	mu       sync.Mutex
	buckets  map[netip.Prefix]*bucket
	overflow bucket
	swept    time.Time // last periodic sweep
	pressed  time.Time // last sweep forced by a full table
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, burst, maxKeys int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), maxKeys: maxKeys, buckets: map[netip.Prefix]*bucket{},
		overflow: bucket{tokens: float64(burst)}}
}

// allow takes a token for key, reporting false when its bucket is empty.
func (r *rateLimiter) allow(key netip.Prefix, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) > time.Minute {
		r.sweep(now)
		r.swept = now
	}
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= r.maxKeys && now.Sub(r.pressed) >= time.Second {
			r.sweep(now)
			r.pressed = now
		}
		if len(r.buckets) < r.maxKeys {
			b = &bucket{tokens: r.burst, at: now}
			r.buckets[key] = b
		} else {
			b = &r.overflow
		}
	}
	if b.at.IsZero() {
		b.at = now
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the buckets that have refilled: lossless, see rateLimiter.
func (r *rateLimiter) sweep(now time.Time) {
	for k, b := range r.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*r.rate >= r.burst {
			delete(r.buckets, k)
		}
	}
}

// tracked returns how many keys have a bucket of their own.
func (r *rateLimiter) tracked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}
