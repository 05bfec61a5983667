package cdc

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/walcast/walcast/schema"
)

// nopPreparer prepares and stores nothing: the benchmark measures the
// publisher's own hand-offs.
type nopPreparer struct{}

func (nopPreparer) Store(context.Context, []schema.Tx) error { return nil }

func (nopPreparer) Prepare([]schema.Tx) func(context.Context) error {
	return func(context.Context) error { return nil }
}

// BenchmarkPublish measures the publisher's cost per piece (batching,
// preparing, handing to the storer, confirming), as the receiver feeds it
// flat out. Allocations are per piece.
//
//	go test ./cdc -run '^$' -bench Publish -benchmem
func BenchmarkPublish(b *testing.B) {
	c := New(Config{Logger: slog.New(slog.DiscardHandler)}, nopPreparer{})
	pending := make(chan *Piece, 256)
	var outstanding atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publish(context.Background(), pending, &outstanding)
	}()
	pieces := make([]Piece, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := &pieces[i%len(pieces)]
		p.Tx, p.Commit = schema.Tx{CommitLSN: uint64(i + 1), EndLSN: uint64(i + 2)}, true
		outstanding.Add(1)
		pending <- p
	}
	close(pending)
	<-done
}
