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

// BenchmarkStateMemoryPerRow measures what live state costs Redis per
// row: 100,000 guarantee rows (about 230 bytes of data each, as the
// election schema's) loaded with LoadState, then used_memory (INFO
// memory) before and after, and MEMORY USAGE of the rows hash. It reports
// bytes/row; one iteration is enough:
//
//	go test ./broadcast -run '^$' -bench StateMemoryPerRow -benchtime 1x
func BenchmarkStateMemoryPerRow(b *testing.B) {
	const rows = 100_000
	rd := testenv.StartRedis(b)
	bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 1000, Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	ctx := context.Background()
	at := schema.Position{LSN: 1 << 30}
	snapshot := func(yield func([]schema.Message) error) error {
		batch := make([]schema.Message, 0, 1000)
		for id := 1; id <= rows; id++ {
			data := fmt.Sprintf(`{"id":%d,"committee_id":%d,"user_id":%d,"elector_id":%d,"elector_name":"Elector %d","status":"strong","notes":"","created_at":"2026-11-26T12:52:21.509891Z","updated_at":"2026-11-26T12:52:21.509891Z"}`,
				id, 1+id%50, 100+id%700, 500000+id, id)
			m := schema.Message{Pos: at, Type: schema.TypeGuarantee, Committee: int64(1 + id%50), HasCommittee: true,
				Owner: int64(100 + id%700), HasOwner: true,
				Row: &schema.RowRef{Table: "public.guarantee", Key: "[" + strconv.Itoa(id) + "]", Op: schema.RowUpsert, Data: []byte(data)}}
			if batch = append(batch, m); len(batch) == cap(batch) {
				if err := yield(batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		return yield(batch)
	}
	for range b.N {
		if err := bus.dropState(ctx); err != nil {
			b.Fatal(err)
		}
		before := usedMemory(b, bus)
		if err := bus.LoadState(ctx, at, []string{"public.guarantee"}, snapshot); err != nil {
			b.Fatal(err)
		}
		after := usedMemory(b, bus)
		usage, err := bus.rdb.MemoryUsage(ctx, rowsKey(bus.stateKey(), "public.guarantee"), 0).Result()
		if err != nil {
			b.Fatal(err)
		}
		st, err := bus.StateInfo(ctx)
		if err != nil || st.Tables["public.guarantee"].Rows != rows {
			b.Fatalf("state after the load: %+v, %v", st, err)
		}
		b.ReportMetric(float64(after-before)/rows, "used_memory_bytes/row")
		b.ReportMetric(float64(usage)/rows, "hash_bytes/row")
		b.ReportMetric(float64(st.Tables["public.guarantee"].Bytes)/rows, "state_bytes/row")
	}
}

// usedMemory reads used_memory from INFO memory.
func usedMemory(b *testing.B, bus *RedisBus) int64 {
	info, err := bus.rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}

// BenchmarkRedisAppendWithState is BenchmarkRedisAppend's batches of 100
// with live state kept: each message updates one of 10,000 rows in the
// same script call. Compare with BenchmarkRedisAppend/batch=100/fsync=false
// for the cost of state:
//
//	go test ./broadcast -run '^$' -bench RedisAppend
func BenchmarkRedisAppendWithState(b *testing.B) {
	rd := testenv.StartRedis(b)
	bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 100000, Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	ctx := context.Background()
	if err := bus.LoadState(ctx, schema.Position{}, []string{"public.guarantee"}, noRows); err != nil {
		b.Fatal(err)
	}
	const batch = 100
	msgs := make([]schema.Message, batch)
	lsn := uint64(1000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		lsn++
		for j := range msgs {
			key := strconv.Itoa((i + j) % 10000)
			data := `{"id":` + key + `,"committee_id":3,"user_id":12,"status":"strong","notes":""}`
			frame := `{"id":"1-0","type":"guarantee_update","action":"updated","table":"public.guarantee","key":"[` + key + `]","data":` + data + `,"timestamp":"2026-11-25T12:00:00.123456Z"}`
			msgs[j] = schema.Message{Pos: schema.Position{LSN: lsn, Seq: uint64(j)}, Type: schema.TypeGuarantee,
				Committee: 3, HasCommittee: true, JSON: []byte(frame),
				Row: &schema.RowRef{Table: "public.guarantee", Key: "[" + key + "]", Op: schema.RowUpsert, Data: []byte(data)}}
		}
		if err := bus.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
