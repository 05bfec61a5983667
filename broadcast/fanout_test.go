package broadcast

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// BenchmarkFanOut measures the cost of one delivery: b.N messages are
// published to every one of n clients connected over loopback WebSocket,
// and the reported ns/delivery is wall time over n×b.N deliveries (the
// clients run in the same process, so their reads are included).
//
//	go test ./broadcast -run '^$' -bench FanOut -benchtime 2000x
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchFanOut(b, n) })
	}
}

func benchFanOut(b *testing.B, n int) {
	hub := NewHub(1 << 16)
	bus := NewMemoryBus(1<<16, hub)
	_, url := startBenchServer(b, hub, bus)
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = dialB(b, url, mint(b, int64(i), RoleAdmin))
	}
	var wg sync.WaitGroup
	payload := `{"id":"%d-0","type":"guarantee_update","action":"updated","table":"public.guarantee","data":{"id":7,"committee_id":3,"user_id":12,"status":"strong"},"timestamp":"2026-11-25T12:00:00.123456Z"}`
	b.ResetTimer()
	start := time.Now()
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < b.N; i++ {
				if _, _, err := c.Read(context.Background()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	const batch = 16
	for i := 0; i < b.N; i += batch {
		var msgs []schema.Message
		for j := i; j < i+batch && j < b.N; j++ {
			msgs = append(msgs, schema.Message{Pos: schema.Position{LSN: uint64(100 + j)}, Type: schema.TypeGuarantee, JSON: []byte(fmt.Sprintf(payload, 100+j))})
		}
		bus.Append(context.Background(), msgs)
		time.Sleep(time.Duration(len(msgs)) * time.Microsecond) // a steady stream, not one burst
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	for _, c := range conns {
		c.CloseNow()
	}
	d := float64(n * b.N)
	b.ReportMetric(float64(el.Nanoseconds())/d, "ns/delivery")
	b.ReportMetric(d/el.Seconds(), "deliveries/s")
	if s := hub.Stats(); s.SlowClosed > 0 {
		b.Errorf("%d clients closed as slow", s.SlowClosed)
	}
}
