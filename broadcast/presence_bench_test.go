package broadcast

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPresenceUpdate measures one presence change (a connection
// changing what it views) with conns connections in presence: 10 per
// committee, plus 5 admins. Its cost should follow the connections that
// may see the user (about 15 here), not conns.
//
//	go test ./broadcast -run '^$' -bench PresenceUpdate -benchtime 4000x
func BenchmarkPresenceUpdate(b *testing.B) {
	for _, conns := range []int{500, 5000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			pr := NewPresence()
			clients := make([]*client, conns)
			for i := range clients {
				c := &client{}
				// Room for every diff of the run: no drain in the loop.
				c.ev.events = make(chan presenceEvent, 4096)
				p := &Principal{UserID: int64(i + 1), HasUser: true, Committees: map[int64]bool{int64(i / 10): true}, Expires: time.Now().Add(time.Hour)}
				if i%(conns/5) == 0 {
					p.Role = RoleAdmin
				}
				c.principal.Store(p)
				pr.join(c, "")
				clients[i] = c
			}
			drain := func() {
				for _, c := range clients {
					for len(c.ev.events) > 0 {
						<-c.ev.events
					}
				}
			}
			drain()
			views := []string{"guarantee:1", "guarantee:2"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pr.join(clients[conns/2+1], views[i%2])
			}
		})
	}
}

// BenchmarkPresenceJoin measures a connection joining presence (its
// presence_state included) and leaving again, with conns connections
// online as in BenchmarkPresenceUpdate.
//
//	go test ./broadcast -run '^$' -bench PresenceJoin -benchtime 4000x
func BenchmarkPresenceJoin(b *testing.B) {
	for _, conns := range []int{500, 5000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			pr := NewPresence()
			for i := range conns {
				c := &client{}
				c.ev.events = make(chan presenceEvent, 4096)
				c.principal.Store(&Principal{UserID: int64(i + 1), HasUser: true, Committees: map[int64]bool{int64(i / 10): true}, Expires: time.Now().Add(time.Hour)})
				pr.join(c, "")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := &client{}
				c.ev.events = make(chan presenceEvent, 4)
				c.principal.Store(&Principal{UserID: int64(conns + 1 + i), HasUser: true, Committees: map[int64]bool{int64(i % (conns / 10)): true}, Expires: time.Now().Add(time.Hour)})
				pr.join(c, "x")
				pr.leave(c)
			}
		})
	}
}
