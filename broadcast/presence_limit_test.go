package broadcast

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// An attacker sends presence frames back to back: they are applied at the
// rate limit, not one each, and the last one sent (while rate-limited)
// wins: the others end up seeing it.
func TestPresenceFramesAreRateLimitedAndCoalesced(t *testing.T) {
	s := newTestServer(t, 0)
	attacker := dialProbe(t, s.url, "attacker", mint(t, 1, "", 1), "")
	watcher := dialProbe(t, s.url, "watcher", mint(t, 2, "", 1), "")
	watcher.send(`{"type":"presence"}`)
	watcher.waitView("2:[]")
	const sent = 200
	start := time.Now()
	for i := range sent {
		attacker.send(fmt.Sprintf(`{"type":"presence","viewing":"v%d"}`, i))
	}
	frames := watcher.waitView(fmt.Sprintf("1:[v%d] 2:[]", sent-1))
	elapsed := time.Since(start)
	diffs := 0
	for _, f := range frames {
		if frameType(f) == "presence_diff" && strings.Contains(string(f), `"user_id":1,`) {
			diffs++
		}
	}
	t.Logf("%d presence frames sent back to back reached a watcher as %d diffs in %v", sent, diffs, elapsed.Round(time.Millisecond))
	// The join and the burst go through at once, the rest at the rate,
	// coalesced: however slow the machine, far below one per frame.
	if limit := int(presenceBurst+2+elapsed.Seconds()*presenceRate) + 1; diffs > limit {
		t.Errorf("%d presence frames sent back to back in %v gave %d diffs, want the rate limit (at most %d)", sent, elapsed, diffs, limit)
	}
	// The attacker's own view converges on its last frame too.
	attacker.waitView(fmt.Sprintf("1:[v%d] 2:[]", sent-1))
}
