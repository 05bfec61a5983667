package broadcast

import (
	"fmt"
	"strings"
	"testing"
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
	for i := range sent {
		attacker.send(fmt.Sprintf(`{"type":"presence","viewing":"v%d"}`, i))
	}
	frames := watcher.waitView(fmt.Sprintf("1:[v%d] 2:[]", sent-1))
	diffs := 0
	for _, f := range frames {
		if frameType(f) == "presence_diff" && strings.Contains(string(f), `"user_id":1,`) {
			diffs++
		}
	}
	t.Logf("%d presence frames sent back to back reached a watcher as %d diffs", sent, diffs)
	// The burst (4) goes through at once, the rest is coalesced into one
	// or two more; a generous bound, far below one per frame.
	if diffs > 12 {
		t.Errorf("%d presence frames sent back to back gave %d diffs, want the rate limit (about %d)", sent, diffs, int(presenceBurst)+1)
	}
	// The attacker's own view converges on its last frame too.
	attacker.waitView(fmt.Sprintf("1:[v%d] 2:[]", sent-1))
}
