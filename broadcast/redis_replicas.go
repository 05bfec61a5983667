package broadcast

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultReplicaTimeout is how long an append waits for its replicas
// when RedisConfig.ReplicaTimeout is zero.
const DefaultReplicaTimeout = time.Second

// ReplicaError says that fewer Redis replicas than required acknowledged
// an append in time: it is stored on the primary but does not count as
// stored (a failover could lose it), so capture must not confirm it and
// retries the append.
type ReplicaError struct {
	Acked, Want int
	Timeout     time.Duration
	LagBytes    int64 // how far the Want-th replica is behind; -1 unknown
}

func (e *ReplicaError) Error() string {
	s := fmt.Sprintf("only %d of %d redis replicas acknowledged the append within %s", e.Acked, e.Want, e.Timeout)
	if e.LagBytes >= 0 {
		s += fmt.Sprintf(" (replica lag %d bytes)", e.LagBytes)
	}
	return s
}

// waitReplicas queues, after an append's script calls in pipe, the WAIT
// that makes the append count only once minReplicas replicas hold it.
// WAIT covers the connection's last write. A retried append whose
// entries were all refused as already stored writes nothing; Redis 7.0
// still moves the connection's offset for a refused write command, but a
// connection whose last write was older would have its WAIT cover only
// that. The INCR of a counter next to the stream moves the connection's
// offset to the primary's current one whatever the server does, so the
// wait covers every entry appended before, on any connection. (A PUBLISH
// would not do: on Redis 7.0.15 a WAIT after it timed out with a healthy
// replica.)
func (b *RedisBus) waitReplicas(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	if b.minReplicas <= 0 {
		return nil
	}
	pipe.Incr(ctx, b.waitKey())
	return pipe.Do(ctx, "WAIT", b.minReplicas, b.replicaTimeout.Milliseconds())
}

// replicasAcked checks the WAIT's answer after the pipeline ran.
func (b *RedisBus) replicasAcked(ctx context.Context, wait *redis.Cmd) error {
	if wait == nil {
		return nil
	}
	acked, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("wait for redis replicas: %w", err)
	}
	b.replicasAckedN.Store(acked)
	if acked >= int64(b.minReplicas) {
		b.replicaLag.Store(0)
		b.replicaShort.Store(nil)
		return nil
	}
	re := &ReplicaError{Acked: int(acked), Want: b.minReplicas, Timeout: b.replicaTimeout, LagBytes: b.measureLag(ctx)}
	b.replicaLag.Store(re.LagBytes)
	b.replicaShort.Store(re)
	return re
}

// measureLag returns how many bytes of the replication stream the
// minReplicas-th most advanced replica lacks (the primary's whole offset
// when fewer replicas are connected), from INFO replication; -1 when
// Redis does not say.
func (b *RedisBus) measureLag(ctx context.Context) int64 {
	info, err := b.info(ctx, "replication")
	if err != nil {
		return -1
	}
	return replicaLag(info, b.minReplicas)
}

// replicaLag parses INFO replication's answer: master_repl_offset minus
// the offset of the n-th most advanced replica.
func replicaLag(info string, n int) int64 {
	var master int64 = -1
	var offsets []int64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case k == "master_repl_offset":
			master, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "offset="):
			for _, f := range strings.Split(v, ",") {
				if off, ok := strings.CutPrefix(f, "offset="); ok {
					if o, err := strconv.ParseInt(off, 10, 64); err == nil {
						offsets = append(offsets, o)
					}
				}
			}
		}
	}
	if master < 0 || n <= 0 {
		return -1
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] > offsets[j] })
	if len(offsets) < n {
		return master
	}
	return max(master-offsets[n-1], 0)
}

// ReplicaStatus reports the last append's replicated acknowledgement:
// short is nil when the required replicas acknowledged it (or none is
// required); acked is how many did; lag is the bytes the required
// replica lacked when one fell short (0 after a full acknowledgement).
func (b *RedisBus) ReplicaStatus() (short error, acked, lag int64) {
	if p := b.replicaShort.Load(); p != nil {
		short = p
	}
	return short, b.replicasAckedN.Load(), b.replicaLag.Load()
}

// MinReplicas is how many replicas must acknowledge an append.
func (b *RedisBus) MinReplicas() int { return b.minReplicas }

// waitKey counts the appends that waited for replicas: the write that
// makes each WAIT cover everything appended before it.
func (b *RedisBus) waitKey() string { return b.key + ":wait" }

// checkReplicas warns at start when fewer replicas are connected to the
// primary than appends wait for: capture would confirm nothing until they
// are.
func (b *RedisBus) checkReplicas(ctx context.Context) {
	if b.minReplicas <= 0 {
		return
	}
	info, err := b.info(ctx, "replication")
	if err != nil {
		return // the appends will say
	}
	connected := -1
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "connected_slaves:"); ok {
			connected, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "role:"); ok && v != "master" {
			b.log.Warn("--redis-url points at a redis replica, not the primary: appends will fail; point it at the primary", "role", v)
		}
	}
	if connected >= 0 && connected < b.minReplicas {
		b.log.Warn("fewer redis replicas are connected than --redis-min-replicas: capture confirms nothing until enough are; start them or lower --redis-min-replicas",
			"connected", connected, "min_replicas", b.minReplicas)
	}
}
