package broadcast

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// newReplicatedBus returns a bus on primary that wants n replicas within
// timeout.
func newReplicatedBus(t testing.TB, primary *testenv.Redis, n int, timeout time.Duration) *RedisBus {
	t.Helper()
	bus, err := NewRedisBus(RedisConfig{URL: primary.URL(), History: 100000, Logger: discard(), MinReplicas: n, ReplicaTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	return bus
}

// An append counts as stored only once a replica holds it. A retried
// append whose entries Redis refuses as already stored (they were stored
// by the attempt whose wait fell short) still waits for the replica: it
// must not succeed while the replica lacks them.
func TestAppendWaitsForReplicas(t *testing.T) {
	ctx := context.Background()
	primary := testenv.StartRedis(t)
	replica := testenv.StartRedis(t, testenv.AsReplicaOf(primary))
	// patient waits long for a replica that acknowledges (a loaded
	// machine may take a while); bus gives up soon on a paused one.
	patient := newReplicatedBus(t, primary, 1, 2*time.Second)
	bus := newReplicatedBus(t, primary, 1, 200*time.Millisecond)
	// other's connection last wrote 1..5, which the replica holds.
	other := newReplicatedBus(t, primary, 1, time.Second)
	if err := other.Append(ctx, msgs(lsns(1, 5)...)); err != nil {
		t.Fatalf("append with a replica: %v", err)
	}
	if err := patient.Append(ctx, msgs(lsns(1, 10)...)); err != nil {
		t.Fatalf("append with a replica: %v", err)
	}
	if short, acked, _ := patient.ReplicaStatus(); short != nil || acked != 1 {
		t.Fatalf("replica status after a full acknowledgement: %v, %d acked", short, acked)
	}

	replica.Pause(t)
	defer replica.Resume(t) // a no-op error-free SIGCONT if already resumed
	var re *ReplicaError
	err := bus.Append(ctx, msgs(lsns(11, 20)...))
	if !errors.As(err, &re) || re.Acked != 0 || re.Want != 1 {
		t.Fatalf("append with the replica paused: %v, want a ReplicaError with 0 of 1", err)
	}
	if !bus.Healthy() {
		t.Error("a replica shortfall made the bus unhealthy: Redis itself answers")
	}
	if short, _, lag := bus.ReplicaStatus(); short == nil || lag <= 0 {
		t.Errorf("replica status while paused: %v, lag %d; want a shortfall and a positive lag", short, lag)
	}
	// The retry stores nothing new, on another connection whose last
	// write the replica holds: its wait must still cover 11..20.
	if err := other.Append(ctx, msgs(lsns(11, 20)...)); !errors.As(err, &re) {
		t.Fatalf("retried append with the replica paused: %v, want a ReplicaError", err)
	}

	replica.Resume(t)
	if err := patient.Append(ctx, msgs(lsns(11, 20)...)); err != nil {
		t.Fatalf("retried append after the replica resumed: %v", err)
	}
	if short, _, lag := patient.ReplicaStatus(); short != nil || lag != 0 {
		t.Errorf("replica status after the resume: %v, lag %d", short, lag)
	}
	got, err := bus.Since(ctx, schema.Position{}, 100)
	if err != nil || len(got) != 20 {
		t.Fatalf("stream holds %d entries (%v), want 20, each once", len(got), err)
	}
}

func TestReplicaLagParsesInfo(t *testing.T) {
	info := "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
		"slave0:ip=127.0.0.1,port=1,state=online,offset=900,lag=0\r\n" +
		"slave1:ip=127.0.0.1,port=2,state=online,offset=700,lag=1\r\n" +
		"master_repl_offset:1000\r\n"
	for _, c := range []struct {
		n    int
		want int64
	}{{1, 100}, {2, 300}, {3, 1000}, {0, -1}} {
		if got := replicaLag(info, c.n); got != c.want {
			t.Errorf("replicaLag(n=%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

// BenchmarkAppendReplicated appends batches of 100 messages to a primary
// with one replica, without waiting and with --redis-min-replicas 1, in
// the same run, with and without AOF (appendfsync always): the cost of
// the replicated acknowledgement.
func BenchmarkAppendReplicated(b *testing.B) {
	for _, aof := range []bool{true, false} {
		b.Run(fmt.Sprintf("aof=%v", aof), func(b *testing.B) {
			var opts []testenv.RedisOption
			if aof {
				opts = append(opts, testenv.WithAOF())
			}
			primary := testenv.StartRedis(b, opts...)
			testenv.StartRedis(b, testenv.AsReplicaOf(primary))
			for _, n := range []int{0, 1} {
				b.Run(fmt.Sprintf("min-replicas=%d", n), func(b *testing.B) {
					bus := newReplicatedBus(b, primary, n, time.Second)
					ctx := context.Background()
					base := uint64(n+1) << 40 // above every id of the other run
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						from := base + uint64(i)*100
						if err := bus.Append(ctx, msgs(lsns(from, from+99)...)); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "appends/s")
				})
			}
		})
	}
}
