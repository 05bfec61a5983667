package broadcast

import (
	"math"
	"testing"

	"github.com/walcast/walcast/schema"
)

// In a burst, the hub wakes each committee's and each owner's connections
// once. Committee and owner ids are any 64-bit integers and must not be
// mistaken for each other (committee -2 and owner 0, or committee and
// owner MaxInt64, once shared a key and the second went unwoken).
func TestBurstWakesEveryCommitteeAndOwner(t *testing.T) {
	for _, ids := range [][2]int64{{-2, 0}, {math.MaxInt64, math.MaxInt64}, {math.MinInt64, math.MaxInt64}} {
		h := NewHub(1024)
		member := &client{wake: make(chan struct{}, 1)}
		member.principal.Store(&Principal{Role: "user", Committees: map[int64]bool{ids[0]: true}})
		owner := &client{wake: make(chan struct{}, 1)}
		owner.principal.Store(&Principal{Role: "user", UserID: ids[1], HasUser: true, Committees: map[int64]bool{}})
		h.add(member)
		h.add(owner)
		// The first publish wakes everyone (the periodic full wake-up).
		h.Publish([]*schema.Message{{Pos: schema.Position{LSN: 1}, Committee: 99, HasCommittee: true}})
		<-member.wake
		<-owner.wake

		burst := []*schema.Message{
			{Pos: schema.Position{LSN: 2, Seq: 0}, Committee: ids[0], HasCommittee: true},
			{Pos: schema.Position{LSN: 2, Seq: 1}, Owner: ids[1], HasOwner: true},
		}
		for i := 2; i < 10; i++ {
			burst = append(burst, &schema.Message{Pos: schema.Position{LSN: 2, Seq: uint64(i)}, Committee: 99, HasCommittee: true})
		}
		h.Publish(burst)
		for name, c := range map[string]*client{"committee member": member, "owner": owner} {
			select {
			case <-c.wake:
			default:
				t.Errorf("ids %v: the %s was not woken by a burst with its message", ids, name)
			}
		}
	}
}
