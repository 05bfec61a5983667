package pipeline

import (
	"context"
	"testing"

	"github.com/walcast/walcast/schema"
)

// nopBus stores nothing: the benchmark measures the sink's own work.
type nopBus struct{}

func (nopBus) Append(context.Context, []schema.Message) error { return nil }

// BenchmarkSinkPrepareAndStore measures what capture does per batch on
// the sink's side: routing 100 transactions of 10 changes ahead
// (Prepare), then the store. Allocations are per change.
//
//	go test ./pipeline -run '^$' -bench SinkPrepare -benchmem
func BenchmarkSinkPrepareAndStore(b *testing.B) {
	s := NewSink(router(), nopBus{}, nil, nil)
	txs := make([]schema.Tx, 100)
	for i := range txs {
		txs[i] = tx(uint64(100+i), 0, 10, true)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 1000 {
		if err := s.Prepare(txs)(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
