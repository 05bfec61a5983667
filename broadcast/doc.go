// Package broadcast stores update messages on a bus and delivers them over
// WebSocket to authenticated browsers, each receiving only what its token
// allows.
//
// Start with Server: it serves /ws (authentication at the upgrade, then a
// Hub subscription per connection), /healthz and /readyz. Messages reach
// the Hub from a bus: MemoryBus when walcast runs as one process, or the
// Redis stream reader. A bus also answers resume requests from its history.
package broadcast
