package pipeline

import (
	"context"
	"testing"

	"github.com/walcast/walcast/schema"
)

// headBus is nopBus with a head: the benchmark measures the dashboards'
// own work around the bus's calls.
type headBus struct{ nopBus }

func (headBus) Head(context.Context) (schema.Position, error) { return schema.Position{}, nil }

// BenchmarkDashboardEmitAfterChange measures a change's store and a
// round of 10 dashboards placed after it, with the dashboards' head read
// outside the append lock: what the pipeline adds per round at the quiet
// floor. Allocations are per round.
//
//	go test ./pipeline -run '^$' -bench DashboardEmit -benchmem
func BenchmarkDashboardEmitAfterChange(b *testing.B) {
	d := NewDashboards(headBus{}, &fakeBuilder{})
	s := NewSink(router(), headBus{}, nil, d)
	emit, _ := d.Loop(progress(0, true))
	ctx := context.Background()
	msgs := dashboard(10)
	txs := make([]schema.Tx, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		txs[0] = tx(uint64(100+i), 0, 1, true)
		if err := s.Store(ctx, txs); err != nil {
			b.Fatal(err)
		}
		if err := emit(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
}
