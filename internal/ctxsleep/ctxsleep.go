// Package ctxsleep holds the one sleep that every retry loop and poll in
// walcast uses: a wait that ends early when its context does.
package ctxsleep

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx is done, whichever comes first. It
// reports whether the full wait passed with ctx still live: a loop stops
// on false. A d of zero or less returns at once, without yielding.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
