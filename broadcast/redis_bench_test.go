package broadcast

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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

// BenchmarkRedisAppendState measures the append path as capture drives it
// on a backlog: batches of new rows of a table that keeps live state, so
// that the script both adds entries and updates the state (the largest
// batch is ten script calls, as capture sends a backlog). It reports the
// Redis server's own CPU per message (INFO cpu), the cost that bounds
// capture when the appends are pipelined, and walcast's allocations per
// message (those of building the messages included).
//
//	go test ./broadcast -run '^$' -bench RedisAppendState -benchmem
func BenchmarkRedisAppendState(b *testing.B) {
	for _, c := range []struct {
		batch int
		state bool
	}{{1, true}, {100, true}, {100, false}, {appendChunk * 10, true}} {
		batch := c.batch
		b.Run(fmt.Sprintf("batch=%d/state=%v", batch, c.state), func(b *testing.B) {
			rd := testenv.StartRedis(b)
			bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 100000, Logger: discard()})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			ctx := context.Background()
			// The table holds state, as LoadState registers it.
			if c.state {
				rd.Do(b, "HSET", bus.stateKey(), "tbl:public.guarantee", schema.TypeGuarantee, "ready", "1")
			}
			msgs := make([]schema.Message, batch)
			lsn, id := uint64(1000), 0
			cpu0 := redisCPU(b, bus)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				lsn++
				for j := range msgs {
					id++
					msgs[j] = guaranteeMsg(schema.Position{LSN: lsn, Seq: uint64(j)}, id)
				}
				if err := bus.Append(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric((redisCPU(b, bus)-cpu0)*1e6/float64(b.N), "redis-µs/msg")
		})
	}
}

// guaranteeMsg is a new row of the election schema's guarantee table, as
// the router makes it (the bench's writer's rows), at pos.
func guaranteeMsg(pos schema.Position, id int) schema.Message {
	data := fmt.Appendf(nil, `{"id":%d,"committee_id":%d,"user_id":%d,"elector_id":%d,"elector_name":"elector %d","status":"strong",`+
		`"notes":"2026-11-25T12:00:00.123456Z xxxxxx","created_at":"2026-11-25T12:00:00.123456+00:00","updated_at":"2026-11-25T12:00:00.123456+00:00"}`,
		id, id%100, id%1000, id*7, id*7)
	frame := fmt.Appendf(nil, `{"id":%q,"type":"guarantee_update","action":"created","table":"public.guarantee","key":"[%d]","data":%s,"version":"%d","timestamp":"2026-11-25T12:00:00.123456Z"}`,
		pos.String(), id, data, pos.LSN)
	return schema.Message{Pos: pos, Type: schema.TypeGuarantee, Committee: int64(id % 100), HasCommittee: true, Owner: int64(id % 1000), HasOwner: true, JSON: frame,
		Row: &schema.RowRef{Table: "public.guarantee", Key: fmt.Sprintf("[%d]", id), Op: schema.RowUpsert, Data: data}}
}

// redisCPU returns the Redis server's CPU seconds so far.
func redisCPU(b *testing.B, bus *RedisBus) float64 {
	info, err := bus.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}
