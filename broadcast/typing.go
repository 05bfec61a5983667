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

// typingLimiter is a connection's token bucket; only its reader uses it.
type typingLimiter struct {
	tokens float64
	at     time.Time
}

func (l *typingLimiter) allow(now time.Time) bool {
	if l.at.IsZero() {
		l.tokens = typingBurst
	} else {
		l.tokens = min(typingBurst, l.tokens+now.Sub(l.at).Seconds()*typingRate)
	}
	l.at = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// typing relays a typing frame of c, locally and through the link.
func (pr *Presence) typing(c *client, target string) {
	p := c.principal.Load()
	if !p.HasUser {
		return
	}
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
	for c, pc := range pr.conns {
		if pc.p.HasUser && pc.p.UserID == t.UserID {
			continue // the sender's own connections
		}
		if sender.visibleTo(pc.p) {
			c.push(frame, false)
		}
	}
}
