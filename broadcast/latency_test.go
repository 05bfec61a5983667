package broadcast

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// BenchmarkStalledClientLatency measures the publish-to-receive latency of
// a healthy client, alone and next to a client that stopped reading, over
// real WebSocket connections. The stalled client must not add latency:
// compare p99 of the two sub-benchmarks (same run, same machine).
//
//	go test ./broadcast -run '^$' -bench StalledClientLatency -benchtime 2000x
func BenchmarkStalledClientLatency(b *testing.B) {
	for _, stalled := range []bool{false, true} {
		name := "alone"
		if stalled {
			name = "with-stalled-client"
		}
		b.Run(name, func(b *testing.B) {
			hub := NewHub(1 << 10)
			bus := NewMemoryBus(1<<12, hub)
			s := &testServer{bus: bus, hub: hub}
			srv, url := startBenchServer(b, hub, bus)
			_ = srv
			s.url = url
			if stalled {
				c := dialB(b, url, mint(b, 1, RoleAdmin))
				defer c.CloseNow() // never reads
			}
			healthy := dialB(b, url, mint(b, 2, RoleAdmin))
			defer healthy.CloseNow()
			pad := strings.Repeat("x", 2000) // stalls the other socket sooner
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pos := schema.Position{LSN: uint64(1000 + i)}
				frame := make([]byte, 8, 8+len(pad))
				binary.BigEndian.PutUint64(frame, uint64(time.Now().UnixNano()))
				frame = append(frame, pad...)
				bus.Append(context.Background(), []schema.Message{{Pos: pos, Type: schema.TypeGuarantee, JSON: frame}})
				_, got, err := healthy.Read(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Duration(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(got))))
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(q(0.50), "p50_µs")
			b.ReportMetric(q(0.99), "p99_µs")
			b.ReportMetric(float64(hub.dropped.Load()), "slow_closed")
		})
	}
}

// startBenchServer runs a server of hub and bus without connection limits.
func startBenchServer(b *testing.B, hub *Hub, bus *MemoryBus) (*Server, string) {
	return startServer(b, ServerConfig{Hub: hub, History: bus,
		Limits: Limits{MaxConnections: 1 << 20, ConnectRate: 1e6, ConnectBurst: 1 << 20}})
}

// dialB connects with tok and reads the welcome.
func dialB(b *testing.B, url, tok string) *websocket.Conn {
	c, err := dialWS(b, url, tok, "")
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := c.Read(context.Background()); err != nil { // welcome
		b.Fatal(err)
	}
	return c
}
