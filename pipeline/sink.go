package pipeline

import (
	"context"
	"time"

	"github.com/walcast/walcast/schema"
)

// Bus is what the pipeline needs of a bus: an append of messages, in
// position order, that recognises a position stored before.
type Bus interface {
	Append(ctx context.Context, msgs []schema.Message) error
}

// Observer is told what the sink stored, for metrics and logs.
type Observer interface {
	// Unroutable is called, once stored, for each message that went to
	// admins only for want of a scope (m.Unroutable says why).
	Unroutable(table string, m *schema.Message)
	// Stored is called once txs are stored; took is the append's duration.
	Stored(txs []schema.Tx, took time.Duration)
}

// Sink is capture's sink: it turns committed transactions into messages
// and appends them to the bus, the seam between capture and delivery.
type Sink struct {
	router *schema.Router
	bus    Bus
	obs    Observer
	dash   *Dashboards // nil when dashboards are off
}

// NewSink returns the sink that routes with router and appends to bus.
// obs may be nil. dash, when not nil, is told of every stored transaction
// and its appends are serialized with the sink's; it must append to the
// same bus.
func NewSink(router *schema.Router, bus Bus, obs Observer, dash *Dashboards) *Sink {
	return &Sink{router: router, bus: bus, obs: obs, dash: dash}
}

// Store routes the changes of txs and appends them to the bus, in one
// append; with dashboards on, it then tells the dashboards what they
// touched, serialized with the dashboards' own appends. It is retried with
// the same input after an error.
func (s *Sink) Store(ctx context.Context, txs []schema.Tx) error {
	return s.Prepare(txs)(ctx)
}

// Prepare routes the changes of txs now and returns their store: the
// append (and the dashboards' note) Store would do, to be called, and
// retried after an error, with no other store between. Capture routes the
// next batch while the previous one is being appended.
func (s *Sink) Prepare(txs []schema.Tx) (store func(ctx context.Context) error) {
	r := s.route(txs)
	if s.dash == nil {
		return func(ctx context.Context) error { return s.append(ctx, txs, r) }
	}
	return func(ctx context.Context) error {
		return s.dash.storing(txs, func() error { return s.append(ctx, txs, r) })
	}
}

// unplacedMsg is a message sent to admins only for want of a scope.
type unplacedMsg struct {
	table string
	i     int // in msgs
}

// routed is what route made of a batch: its messages, and which of them
// went to admins only for want of a scope.
type routed struct {
	changes  int // the changes routed; with none there is nothing to store
	msgs     []schema.Message
	unplaced []unplacedMsg
}

// route routes the changes of txs.
func (s *Sink) route(txs []schema.Tx) routed {
	n := 0
	for i := range txs {
		n += len(txs[i].Changes)
	}
	if n == 0 {
		return routed{}
	}
	msgs := make([]schema.Message, 0, n)
	var unplaced []unplacedMsg
	for i := range txs {
		for j := range txs[i].Changes {
			if m, ok := s.router.Route(&txs[i], &txs[i].Changes[j]); ok {
				if m.Unroutable != "" {
					ch := &txs[i].Changes[j]
					unplaced = append(unplaced, unplacedMsg{ch.Schema + "." + ch.Table, len(msgs)})
				}
				msgs = append(msgs, m)
			}
		}
	}
	return routed{changes: n, msgs: msgs, unplaced: unplaced}
}

// append appends the messages routed from txs to the bus.
func (s *Sink) append(ctx context.Context, txs []schema.Tx, r routed) error {
	if r.changes == 0 {
		return nil
	}
	start := time.Now()
	if err := s.bus.Append(ctx, r.msgs); err != nil {
		return err
	}
	if s.obs == nil {
		return nil
	}
	// Reported once stored: a failed append is retried with the same input.
	for _, u := range r.unplaced {
		s.obs.Unroutable(u.table, &r.msgs[u.i])
	}
	s.obs.Stored(txs, time.Since(start))
	return nil
}
