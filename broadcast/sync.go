package broadcast

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/schema"
)

// Sync: a client asks for the current rows of its scope ({"type":"sync"}
// or /ws?sync= at connect) and receives them in state frames, then
// state_end with the position they are consistent with, then every change
// after that position through the resume path. It is all sent owning the
// connection's writes, so no change frame comes between. Rows are scoped by
// the rule changes are, from the scope the state keeps with each row: no
// database round trip, and serve replicas answer from Redis.

const (
	// syncChunkRows and syncChunkBytes bound one state frame.
	syncChunkRows  = 500
	syncChunkBytes = 256 << 10
	// Sync frames a connection may send: syncRate per second, in bursts
	// of syncBurst; more are answered with a rate_limited error.
	syncRate  = 0.2
	syncBurst = 3.0
)

const syncLimitMessage = "too many sync frames: at most one every 5 seconds; the connection stays open"

// reasonNotSeeded is why a tracked table the state does not hold is
// unavailable.
const reasonNotSeeded = "no live state: not loaded yet (walcast state rebuild) or the table has no primary key"

// syncFrom reads ?sync= of a connect URL: nil when absent; "all" or a
// comma-separated list of message types. The types replace those of the
// subscription given at connect (sub, which may be nil).
func syncFrom(q url.Values, sub *clientFrame, custom map[string]bool) (*clientFrame, error) {
	if !q.Has("sync") {
		return nil, nil
	}
	f := clientFrame{Type: "sync"}
	if sub != nil {
		f.Committees = sub.Committees
		f.Types = sub.Types
	}
	if v := strings.TrimSpace(q.Get("sync")); v != "all" {
		f.Types = []string{}
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t == "" {
				continue
			}
			if !knownTypes[t] && !custom[t] {
				return nil, fmt.Errorf("sync: unknown message type %q (want all, or message types)", t)
			}
			f.Types = append(f.Types, t)
		}
	}
	return &f, nil
}

// requestSync answers a sync frame, after the rate limit; the reader
// calls it owning the writes.
func (s *Server) requestSync(ctx context.Context, c *client, f clientFrame) error {
	if ok, _ := c.syncs.take(time.Now(), syncRate, syncBurst); !ok {
		return c.send(ctx, errorFrame("rate_limited", syncLimitMessage))
	}
	return s.sync(ctx, c, narrow(c.principal.Load(), f))
}

// sync sends the state of the connection's scope, state_end, then the
// changes after it (see the top of this file); the owner of the writes
// calls it. nf, when not nil, replaces the subscription first, as
// subscribe does, and the dashboards are sent again after the sync.
func (s *Server) sync(ctx context.Context, c *client, nf *filter) error {
	if nf != nil {
		c.filter.Store(nf)
	}
	err := s.syncState(ctx, c)
	if err == nil && nf != nil && nf.allows(&schema.Message{Type: schema.TypeDashboard}) {
		err = s.resendDashboards(ctx, c)
	}
	return err
}

// syncState sends the rows, state_end and the replay of a sync.
func (s *Server) syncState(ctx context.Context, c *client) error {
	if s.cfg.State == nil {
		return c.send(ctx, errorFrame("state_unavailable", "this server keeps no live state"))
	}
	read, err := s.stateReads.get(ctx, c.sent)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.logger().Warn("sync: cannot read the live state; the client may retry", "err", err)
		return c.send(ctx, errorFrame("state_unavailable", "the live state cannot be read now; retry"))
	}
	p, f := c.principal.Load(), c.filter.Load()
	tables, unavailable := s.syncTables(read.before, f)
	if err := sendRows(ctx, c, read, tables, p, f); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	// A table turned off while it was read was not sent whole.
	tables, unavailable = stillOn(read.after, tables, unavailable)
	pos := read.pos
	s.syncs.Add(1)
	if err := c.send(ctx, stateEndFrame(pos, tables, unavailable)); err != nil {
		return err
	}
	return s.replay(ctx, c, pos)
}

// sendRows sends, in state frames, the rows of read's tables that p and
// f allow.
func sendRows(ctx context.Context, c *client, read *stateRead, tables []string, p *Principal, f *filter) error {
	out := stateWriter{c: c}
	for i := range read.rows {
		r := &read.rows[i]
		m := schema.Message{Type: r.Type, Committee: r.Committee, HasCommittee: r.HasCommittee,
			Owner: r.Owner, HasOwner: r.HasOwner, AdminOnly: r.AdminOnly}
		if slices.Contains(tables, r.Table) && p.Allows(&m) && f.allows(&m) {
			if err := out.add(ctx, r, read.encoded[i]); err != nil {
				return err
			}
		}
	}
	return out.flush(ctx)
}

// syncTables returns the tables a sync with filter f sends, and those it
// asks for that have no state, with why.
func (s *Server) syncTables(st StateStatus, f *filter) (tables []string, unavailable [][2]string) {
	wanted := func(typ string) bool { return f == nil || f.types == nil || typ == "" || f.types[typ] }
	for _, t := range slices.Sorted(maps.Keys(st.Tables)) {
		ts := st.Tables[t]
		typ := ts.Type
		if typ == "" {
			typ = s.cfg.StateTables[t]
		}
		switch {
		case !wanted(typ):
		case ts.Off:
			unavailable = append(unavailable, [2]string{t, ts.Reason})
		default:
			tables = append(tables, t)
		}
	}
	for _, t := range slices.Sorted(maps.Keys(s.cfg.StateTables)) {
		if _, ok := st.Tables[t]; !ok && wanted(s.cfg.StateTables[t]) {
			unavailable = append(unavailable, [2]string{t, reasonNotSeeded})
		}
	}
	return tables, unavailable
}

// stillOn moves the tables st reports off or gone to unavailable.
func stillOn(st StateStatus, tables []string, unavailable [][2]string) ([]string, [][2]string) {
	on := tables[:0:0]
	for _, t := range tables {
		switch ts, ok := st.Tables[t]; {
		case !ok:
			unavailable = append(unavailable, [2]string{t, reasonNotSeeded})
		case ts.Off:
			unavailable = append(unavailable, [2]string{t, ts.Reason})
		default:
			on = append(on, t)
		}
	}
	return on, unavailable
}

// stateWriter collects rows into state frames of one table each, bounded
// in rows and bytes.
type stateWriter struct {
	c     *client
	table string
	n     int
	b     []byte
}

// add adds row r, encoded by encodeStateRow.
func (w *stateWriter) add(ctx context.Context, r *StateRow, encoded []byte) error {
	if w.n > 0 && (r.Table != w.table || w.n >= syncChunkRows || len(w.b) >= syncChunkBytes) {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	if w.n == 0 {
		w.table = r.Table
		w.b = append(w.b[:0], `{"type":"state","table":`...)
		w.b = jsonx.AppendString(w.b, r.Table)
		w.b = append(w.b, `,"message_type":`...)
		w.b = jsonx.AppendString(w.b, r.Type)
		w.b = append(w.b, `,"rows":[`...)
	} else {
		w.b = append(w.b, ',')
	}
	w.n++
	w.b = append(w.b, encoded...)
	return nil
}

// encodeStateRow returns a row as a state frame lists it; a shared read
// encodes each row once for every sync it serves.
func encodeStateRow(r *StateRow) []byte {
	b := make([]byte, 0, len(r.Key)+len(r.Data)+48)
	b = append(b, `{"key":`...)
	b = jsonx.AppendString(b, r.Key)
	b = append(b, `,"version":"`...)
	b = r.Version.Append(b)
	b = append(b, `","data":`...)
	b = append(b, r.Data...)
	if r.Oversized {
		b = append(b, `,"oversized":true`...)
	}
	return append(b, '}')
}

func (w *stateWriter) flush(ctx context.Context) error {
	if w.n == 0 {
		return nil
	}
	frame := append(w.b, "]}"...)
	w.b, w.n = nil, 0
	return w.c.send(ctx, frame)
}

// stateEndFrame ends a sync: the position the rows are consistent with,
// the tables sent whole, and those asked for that have no state.
func stateEndFrame(pos schema.Position, tables []string, unavailable [][2]string) []byte {
	b := []byte(`{"type":"state_end","position":"`)
	b = pos.Append(b)
	b = append(b, `","tables":`...)
	b = jsonx.AppendStrings(b, tables)
	b = append(b, `,"unavailable":[`...)
	for i, u := range unavailable {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"table":`...)
		b = jsonx.AppendString(b, u[0])
		b = append(b, `,"reason":`...)
		b = jsonx.AppendString(b, u[1])
		b = append(b, '}')
	}
	return append(b, "]}"...)
}
