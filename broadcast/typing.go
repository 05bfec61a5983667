package broadcast

import (
	"slices"
	"strconv"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
)

// Typing indicators: {"type":"typing","target":"guarantee:7"} from a
// client is relayed as {"type":"typing","user_id":12,"target":"…"} to the
// connections taking part in presence that may see the sender (the
// presence visibility rules), other than the sender's own. Never stored.

// Typing frames a connection may send: typingRate per second, in bursts
// of typingBurst; more are dropped without an answer.
const (
	typingRate  = 2.0
	typingBurst = 2.0
)

// MaxPresenceText bounds the viewing and target strings of presence and
// typing frames.
const MaxPresenceText = 256

// typingEvent is one typing indicator on its way to connections.
type typingEvent struct {
	Replica    string  `json:"r"`
	UserID     int64   `json:"u"`
	Role       string  `json:"role,omitempty"`
	Committees []int64 `json:"c"`
	Target     string  `json:"t"`
}

// rateBucket is a token bucket refilled at rate per second up to burst;
// it starts full.
type rateBucket struct {
	tokens float64
	at     time.Time
}

// take spends a token if one is there; otherwise it reports how long until
// one is.
func (b *rateBucket) take(now time.Time, rate, burst float64) (bool, time.Duration) {
	if b.at.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	}
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// typingLimiter is a connection's token bucket; only its reader uses it.
type typingLimiter struct {
	b rateBucket
}

func (l *typingLimiter) allow(now time.Time) bool {
	ok, _ := l.b.take(now, typingRate, typingBurst)
	return ok
}

// typing relays a typing frame of c, locally and through the link.
func (pr *Presence) typing(c *client, target string) {
	p := c.principal.Load()
	t := typingEvent{UserID: p.UserID, Role: p.Role, Target: target, Committees: make([]int64, 0, len(p.Committees))}
	for id := range p.Committees {
		t.Committees = append(t.Committees, id)
	}
	slices.Sort(t.Committees)
	pr.deliverTyping(t)
	pr.mu.Lock()
	link := pr.link
	pr.mu.Unlock()
	if link != nil {
		link.typing(t)
	}
}

// deliverTyping sends t to this process's connections that may see its
// sender.
func (pr *Presence) deliverTyping(t typingEvent) {
	sender := &presenceEntry{UserID: t.UserID, Committees: t.Committees}
	frame := []byte(`{"type":"typing","user_id":`)
	frame = strconv.AppendInt(frame, t.UserID, 10)
	frame = append(frame, `,"target":`...)
	frame = jsonx.AppendString(frame, t.Target)
	frame = append(frame, '}')
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.audience(t.UserID, [][]int64{t.Committees}, func(c *client, pc *presenceConn) {
		p := c.principal.Load()
		if p.HasUser && p.UserID == t.UserID {
			return // the sender's own connections
		}
		if p.SeesUser(sender.UserID, sender.Committees) {
			// Delivery checks the sender again against the token in
			// force when it writes.
			c.push(frame, sender)
		}
	})
}
