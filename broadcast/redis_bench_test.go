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
				benchAppend(b, RedisConfig{URL: rd.URL()}, batch)
			})
		}
	}
}

// BenchmarkRedisClusterAppend compares, in one run, the append path on a
// single Redis (with a replica) and on a Redis Cluster (three primaries,
// a replica each), without and with --redis-min-replicas 1. All of walcast's keys share
// one slot, so every append goes to the one primary that owns it.
//
//	go test ./broadcast -run '^$' -bench RedisClusterAppend -benchtime 20000x
func BenchmarkRedisClusterAppend(b *testing.B) {
	single := testenv.StartRedis(b)
	testenv.StartRedis(b, testenv.AsReplicaOf(single))
	cluster := testenv.StartRedisCluster(b)
	for _, batch := range []int{1, 100} {
		for _, c := range []struct {
			name, url string
			replicas  int
		}{{"single", single.URL(), 0}, {"single/min-replicas=1", single.URL(), 1},
			{"cluster", cluster.URL(), 0}, {"cluster/min-replicas=1", cluster.URL(), 1}} {
			name := fmt.Sprintf("%s/batch=%d", c.name, batch)
			b.Run(name, func(b *testing.B) {
				// A stream per run: ids start over at each.
				benchAppend(b, RedisConfig{URL: c.url, Key: "bench:" + name, MinReplicas: c.replicas}, batch)
			})
		}
	}
}

// benchAppend appends b.N messages in batches of batch to the bus of cfg
// and reports the rate.
func benchAppend(b *testing.B, cfg RedisConfig, batch int) {
	cfg.History, cfg.Logger = 100000, discard()
	bus, err := NewRedisBus(cfg)
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
}
