package broadcast

import (
	"context"
	"fmt"
	"testing"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// BenchmarkRedisAppend measures the capture side's append path: batches of
// messages pipelined to a real Redis as the publisher sends them.
//
//	go test ./broadcast -run '^$' -bench RedisAppend
func BenchmarkRedisAppend(b *testing.B) {
	for _, aof := range []bool{false, true} {
		for _, batch := range []int{1, 10, 100} {
			name := fmt.Sprintf("batch=%d/fsync=%v", batch, aof)
			b.Run(name, func(b *testing.B) {
				var opts []testenv.RedisOption
				if aof {
					opts = append(opts, testenv.WithAOF())
				}
				rd := testenv.StartRedis(b, opts...)
				bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 100000, Logger: discard()})
				if err != nil {
					b.Fatal(err)
				}
				defer bus.Close()
				frame := []byte(`{"id":"1-0","type":"guarantee_update","action":"updated","table":"public.guarantee","data":{"id":7,"committee_id":3,"user_id":12,"status":"strong","notes":""},"timestamp":"2026-11-25T12:00:00.123456Z"}`)
				msgs := make([]schema.Message, batch)
				lsn := uint64(1000)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += batch {
					lsn++
					for j := range msgs {
						msgs[j] = schema.Message{Pos: schema.Position{LSN: lsn, Seq: uint64(j)}, Type: schema.TypeGuarantee,
							Committee: 3, HasCommittee: true, JSON: frame}
					}
					if err := bus.Append(context.Background(), msgs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
