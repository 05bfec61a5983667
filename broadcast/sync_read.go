package broadcast

import (
	"context"
	"sync"
	"time"

	"github.com/walcast/walcast/schema"
)

// stateReadReuse is how long one read of the live state serves the syncs
// that start after it: a thousand pages opening at once (a reconnect
// storm, a deploy) read the state once, not a thousand times. A read is
// consistent with its position at least, however old: the changes after
// it follow each sync through the resume path.
const stateReadReuse = time.Second

// stateReadTimeout bounds one shared read of the live state.
const stateReadTimeout = time.Minute

// stateRead is one read of the whole live state, shared by syncs.
type stateRead struct {
	done    chan struct{} // closed when the fields below are set
	started time.Time

	before, after StateStatus // StateInfo before and after the rows
	pos           schema.Position
	rows          []StateRow
	encoded       [][]byte // rows[i] as a state frame lists it
	err           error
}

// stateReads shares reads of the live state among syncs (see
// stateReadReuse); at most one runs at a time.
type stateReads struct {
	store StateStore
	mu    sync.Mutex
	cur   *stateRead // the newest read: running, or done and still fresh
}

// get returns a read of the state at or after pos that started at most
// stateReadReuse ago, starting one when there is none, and waits for it.
// pos is what the connection was sent already: its replay starts after
// that (each id goes out once per connection), so an older read would
// leave the changes in between out.
func (r *stateReads) get(ctx context.Context, pos schema.Position) (*stateRead, error) {
	for fresh := false; ; fresh = true {
		r.mu.Lock()
		read := r.cur
		if fresh || read == nil || time.Since(read.started) > stateReadReuse {
			read = &stateRead{done: make(chan struct{}), started: time.Now()}
			r.cur = read
			// Not the caller's context: other syncs wait on this read.
			go r.run(read)
		}
		r.mu.Unlock()
		select {
		case <-read.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if read.err != nil || fresh || !read.pos.Less(pos) {
			return read, read.err
		}
	}
}

// run reads the state into read; the rows are let go once the read is
// no longer fresh.
func (r *stateReads) run(read *stateRead) {
	ctx, cancel := context.WithTimeout(context.Background(), stateReadTimeout)
	defer cancel()
	defer close(read.done)
	defer time.AfterFunc(stateReadReuse, func() {
		r.mu.Lock()
		if r.cur == read {
			r.cur = nil
		}
		r.mu.Unlock()
	})
	if read.before, read.err = r.store.StateInfo(ctx); read.err != nil {
		return
	}
	read.pos, read.err = r.store.ReadState(ctx, read.before.tableNames(), syncChunkRows, func(batch []StateRow) error {
		for i := range batch {
			read.encoded = append(read.encoded, encodeStateRow(&batch[i]))
			batch[i].Data = nil // held once, encoded
		}
		read.rows = append(read.rows, batch...)
		return nil
	})
	if read.err != nil {
		return
	}
	read.after, read.err = r.store.StateInfo(ctx)
}
