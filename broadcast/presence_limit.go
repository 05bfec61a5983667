package broadcast

import (
	"sync"
	"time"
)

// Presence frames a connection may apply: presenceRate per second, in
// bursts of presenceBurst. Each one costs a remerge, a diff to every
// connection that may see the user and a Redis write, so one socket must
// not be able to send them back to back. Frames over the limit are not
// refused but coalesced: the newest viewing is applied as soon as the
// bucket allows, so the last thing a client said it views always wins.
const (
	presenceRate  = 2.0
	presenceBurst = 4.0
)

// presenceLimiter rate-limits and coalesces one connection's presence
// frames. Its timer (owned here, stopped by close) applies a coalesced
// frame later; lock order is presenceLimiter.mu, then Presence.mu.
type presenceLimiter struct {
	mu      sync.Mutex
	bucket  rateBucket
	pending *string // newest viewing waiting for a token
	timer   *time.Timer
	closed  bool
}

// request answers a presence frame of c: applied now when the rate allows,
// otherwise kept (replacing any older one kept) and applied when it does.
func (pr *Presence) request(c *client, viewing string) {
	l := &c.presenceLimit
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	ok, wait := l.bucket.take(time.Now(), presenceRate, presenceBurst)
	if ok {
		l.pending = nil // superseded by this newer frame
		pr.join(c, viewing)
		return
	}
	l.pending = &viewing
	if l.timer == nil {
		l.timer = time.AfterFunc(wait, func() { pr.applyPending(c) })
	}
}

// applyPending applies the newest coalesced presence frame of c.
func (pr *Presence) applyPending(c *client) {
	l := &c.presenceLimit
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.closed || l.pending == nil {
		return
	}
	ok, wait := l.bucket.take(time.Now(), presenceRate, presenceBurst)
	if !ok { // the timer fired a little early
		l.timer = time.AfterFunc(wait, func() { pr.applyPending(c) })
		return
	}
	viewing := *l.pending
	l.pending = nil
	pr.join(c, viewing)
}

// close stops the limiter when the connection ends: nothing is applied
// after it, so a late timer cannot bring a closed connection back.
func (l *presenceLimiter) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.pending = nil
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
}
