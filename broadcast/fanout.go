package broadcast

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Delivery without a goroutine per connection.
//
// Profiles of the election regime (10,000 clients × 10 changes/s, every
// change visible to everyone) showed 89% of the CPU in per-connection
// writer goroutines: a write(2) per connection per change, the park and
// wake-up of every writer on every publish (select, sudog, timers), and
// the library's framing and locking per frame. So connections have no
// writer goroutine. A small fixed set of delivery workers, one per shard
// of the connections (a shard per GOMAXPROCS), serves the connections
// that are owed something: an election-wide publish sweeps every shard,
// a scoped one queues only the connections indexed under its scope (see
// Hub.wakeFor). Serving a connection writes everything it is owed since
// its cursor as already-framed bytes (server frames are unmasked, so a
// message's frame is its JSON behind a fixed header) in one non-blocking
// write: what piled up while a worker was busy goes out together, and a
// quiet system writes each change at once. A socket that cannot take it
// all is handed, with what is left, to a short-lived goroutine that
// finishes the write blocking (watched by Server.Watch) while the workers
// skip the connection.
//
// Workers run only while there is work: a shard starts its worker when
// work arrives and the worker exits when its queue is empty, so an idle
// server, and a test's Hub, hold no delivery goroutines.

// fanout is the hub's delivery workers and the connections they serve.
type fanout struct {
	// head and dhead are the hub's next sequences, published for the
	// sweeps: a connection whose cursors reached them is owed nothing
	// from the window or the dashboards.
	head   atomic.Uint64
	dhead  atomic.Uint64
	shards []fanShard
	mu     sync.Mutex // guards rr
	rr     int        // the shard the next connection joins
}

// fanShard is a share of the connections, served by at most one worker.
type fanShard struct {
	f       *fanout
	mu      sync.Mutex
	clients []*client // every connection of the shard (client.idx)
	ready   []*client // connections a scoped publish or an event woke
	sweep   bool      // serve every connection: an election-wide publish
	running bool      // a worker is serving the shard
	batch   []*client // the worker's scratch: only while running
}

func newFanout() *fanout {
	f := &fanout{shards: make([]fanShard, max(1, runtime.GOMAXPROCS(0)))}
	for i := range f.shards {
		f.shards[i].f = f
	}
	return f
}

// attach adds c to a shard.
func (f *fanout) attach(c *client) {
	f.mu.Lock()
	i := f.rr
	f.rr = (f.rr + 1) % len(f.shards)
	f.mu.Unlock()
	sh := &f.shards[i]
	sh.mu.Lock()
	c.fan, c.shard, c.idx = f, i, len(sh.clients)
	sh.clients = append(sh.clients, c)
	sh.mu.Unlock()
}

// detach removes c from its shard.
func (f *fanout) detach(c *client) {
	sh := &f.shards[c.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.idx < 0 || c.idx >= len(sh.clients) || sh.clients[c.idx] != c {
		return
	}
	last := len(sh.clients) - 1
	moved := sh.clients[last]
	sh.clients[c.idx], moved.idx = moved, c.idx
	sh.clients[last] = nil
	sh.clients = sh.clients[:last]
	c.idx = -1
}

// sweepAll has every connection served: an election-wide publish.
func (f *fanout) sweepAll() {
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		sh.sweep = true
		sh.start()
		sh.mu.Unlock()
	}
}

// notify has c served, once however often it is notified before.
func (f *fanout) notify(c *client) {
	if !c.queued.CompareAndSwap(false, true) {
		return
	}
	sh := &f.shards[c.shard]
	sh.mu.Lock()
	sh.ready = append(sh.ready, c)
	sh.start()
	sh.mu.Unlock()
}

// start starts the shard's worker unless it runs; sh.mu is held.
func (sh *fanShard) start() {
	if !sh.running {
		sh.running = true
		go sh.work()
	}
}

// work serves the shard's connections until nothing is owed, then exits.
func (sh *fanShard) work() {
	for {
		sh.mu.Lock()
		batch := sh.batch[:0]
		batch = append(batch, sh.ready...)
		ready := len(batch)
		if sh.sweep {
			batch = append(batch, sh.clients...)
			sh.sweep = false
		}
		clear(sh.ready)
		sh.ready = sh.ready[:0]
		if len(batch) == 0 {
			sh.running = false
			sh.batch = batch
			sh.mu.Unlock()
			return
		}
		sh.mu.Unlock()
		for i, c := range batch {
			batch[i] = nil
			if i >= ready {
				// Swept: at a high publish rate most connections were
				// already served up to the head by the sweep before.
				if c.cursor.Load() >= sh.f.head.Load() && c.dcursor.Load() >= sh.f.dhead.Load() {
					continue
				}
			} else {
				// Cleared before serving: a wake-up during the serve
				// queues c again rather than being lost.
				c.queued.Store(false)
			}
			c.srv.serve(c)
		}
		sh.batch = batch
	}
}

// wakeUp has c's owed messages delivered soon. It never writes itself, so
// it may be called under the hub's or presence's lock.
func (c *client) wakeUp() {
	switch {
	case c.wake != nil: // a client of the hub's own tests, which waits itself
		select {
		case c.wake <- struct{}{}:
		default:
		}
	case c.fan != nil:
		c.fan.notify(c)
	}
}

// Write ownership: one goroutine at a time writes to a connection, so
// replayed and live messages go out in one order, each id once. A worker
// takes it without waiting (tryOwn) and skips a busy connection, leaving
// pending set; whoever owns it then has it served again on release, so no
// wake-up is lost. The reader takes it, waiting, for what a client frame
// asks (a resume, a sync, an auth change); the slow-write goroutine holds
// it until its write is done.

// tryOwn takes write ownership of c if nobody holds it.
func (c *client) tryOwn() bool {
	if !c.own.TryLock() {
		c.pending.Store(true)
		// The owner may have released between the TryLock and the Store,
		// seeing no pending: try once more.
		if !c.own.TryLock() {
			return false
		}
	}
	c.pending.Store(false)
	return true
}

// release gives write ownership back, having c served again if a wake-up
// came while it was held.
func (c *client) release() {
	c.own.Unlock()
	if c.pending.Load() {
		c.wakeUp()
	}
}

// releaseAndServe gives write ownership back and has what accumulated
// meanwhile delivered: after a replay, sync or auth change.
func (c *client) releaseAndServe() {
	c.own.Unlock()
	c.wakeUp()
}
