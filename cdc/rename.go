package cdc

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/walcast/walcast/schema"
)

// renameLog remembers which renames of tracked tables were logged, so that
// each is said once per process rather than at every Relation message and
// every reconnection.
type renameLog struct {
	mu     sync.Mutex
	warned map[string]bool
}

// renamed is the decoder's onRenamed: a tracked table (known by its
// relation id) now has another name than --tables gives it. Its changes
// keep flowing under the configured name; the operator must update
// --tables before the next start, which otherwise refuses to start because
// the configured name no longer exists.
func (c *Capture) renamed(rel uint32, configured schema.Table, now string) {
	key := strconv.FormatUint(uint64(rel), 10) + " " + now
	c.renames.mu.Lock()
	first := !c.renames.warned[key]
	if first {
		if c.renames.warned == nil {
			c.renames.warned = map[string]bool{}
		}
		c.renames.warned[key] = true
	}
	c.renames.mu.Unlock()
	if !first {
		return
	}
	c.log.Warn("a tracked table was renamed or moved; walcast follows it by its relation id and keeps sending its changes as "+configured.Qualified()+", but the next start fails until --tables names it",
		"configured", configured.Qualified(), "now", now, "relation_id", rel,
		"fix", fmt.Sprintf("replace %s in --tables with %s=%s and restart walcast", configured.Qualified(), now, configured.Label()))
}
