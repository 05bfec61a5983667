package broadcast

import (
	"sync"
	"time"
)

// Limits bound who may connect, so a reconnect storm or one misbehaving
// user cannot exhaust the server. Zero fields take their defaults.
type Limits struct {
	MaxConnections int     // total; default 20000
	MaxPerUser     int     // per user_id; default 32 (tabs, devices)
	ConnectRate    float64 // new connections per second per IP; default 20
	ConnectBurst   int     // bucket size per IP; default 40
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
	return l
}

// rateLimiter is a token bucket per client IP.
type rateLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow takes a token for ip, reporting false when its bucket is empty.
func (r *rateLimiter) allow(ip string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) > time.Minute {
		// Forget IPs whose buckets have long been full again.
		for k, b := range r.buckets {
			if now.Sub(b.at).Seconds()*r.rate > r.burst {
				delete(r.buckets, k)
			}
		}
		r.swept = now
	}
	b, ok := r.buckets[ip]
	if !ok {
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[ip] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
