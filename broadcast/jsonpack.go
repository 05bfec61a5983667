package broadcast

// jsonPackChunk is the size of the chunks a jsonPack fills: about 150
// change frames of a few hundred bytes each.
const jsonPackChunk = 64 << 10

// jsonPack copies the JSON frames of consecutive change messages into
// shared chunks instead of one allocation each.
//
// Why: the hub's window holds the newest 65,536 changes, and a frame
// allocated on its own is rounded up to the allocator's next size class.
// Frames grow by a byte now and then as ids gain digits (row ids, LSNs),
// and when the common size crosses a class boundary every frame in the
// window costs 32 bytes more: in the soak (5,000 changes/s) the window's
// frames went from the 416-byte class to the 448-byte one between minutes
// 1 and 10, +3.7 MiB live and twice that in heap goal, which is most of
// the soak's RSS creep. Packed, a frame costs its length, and a chunk is
// freed when the window has let go of its last frame: messages leave the
// window in the order they came, so chunks leave it whole.
//
// Only frames that leave in order may be packed: a message kept apart
// from the window (the hub's newest dashboard of each key, a connection's
// dashboards) would keep its whole chunk alive. The follower packs changes
// and leaves dashboards to their own allocation.
//
// A jsonPack belongs to one goroutine (the follower's); the slices it
// returns are never written (messages are immutable once published) and
// have no spare capacity, so an append to one copies.
type jsonPack struct {
	buf []byte
}

// bytes returns a copy of s; a nil pack allocates it on its own.
func (p *jsonPack) bytes(s string) []byte {
	if p == nil || len(s) > jsonPackChunk/16 {
		return []byte(s)
	}
	if cap(p.buf)-len(p.buf) < len(s) {
		p.buf = make([]byte, 0, jsonPackChunk)
	}
	n := len(p.buf)
	p.buf = append(p.buf, s...)
	return p.buf[n:len(p.buf):len(p.buf)]
}
