package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a reported percentile is at most 1/32 (about 3%) above the true
// value. Values below 2^subBits nanoseconds are exact.
const subBits = 5

const (
	subCount  = 1 << subBits
	numBucket = (64 - subBits + 1) * subCount
)

// hist is a log-bucketed histogram of durations in nanoseconds, in the
// manner of HdrHistogram: safe for concurrent Record from many goroutines
// (atomic adds), 16 KiB whatever the count.
type hist struct {
	counts [numBucket]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

// bucketOf returns the bucket index of v (v >= 0).
func bucketOf(v int64) int {
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - 1 - subBits
	mant := u >> uint(shift) // in [subCount, 2*subCount)
	return (shift+1)*subCount + int(mant-subCount)
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	mant := uint64(i%subCount + subCount)
	return int64(mant << uint(shift)), int64((mant+1)<<uint(shift) - 1)
}

// Record adds one duration; negative ones (clock steps) count as zero.
func (h *hist) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is the number of recorded values.
func (h *hist) Count() uint64 { return h.n.Load() }

// Max is the largest recorded value, exactly.
func (h *hist) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the value at quantile q (0 < q <= 1): the upper bound
// of the bucket holding the ceil(q*n)-th smallest value, capped at Max. It
// is 0 for an empty histogram.
func (h *hist) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			if m := h.max.Load(); hi > m {
				hi = m
			}
			return time.Duration(hi)
		}
	}
	return h.Max()
}

// Merge adds o's counts into h.
func (h *hist) Merge(o *hist) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}
