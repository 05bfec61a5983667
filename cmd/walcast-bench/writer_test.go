package main

import (
	"slices"
	"testing"
	"time"
)

// The writers share the rate and send evenly, one transaction every
// txSize/rate seconds, not all at the same instants in bursts.
func TestWritersSendEvenly(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, c := range []struct {
		writers, txSize int
		rate            float64
		want            time.Duration // between two consecutive sends
	}{
		{2, 1, 10, 100 * time.Millisecond},
		{2, 1, 500, 2 * time.Millisecond},
		{4, 10, 1000, 10 * time.Millisecond},
		{1, 1, 10, 100 * time.Millisecond},
	} {
		perWriter := time.Duration(float64(time.Second) * float64(c.txSize) / (c.rate / float64(c.writers)))
		var sends []time.Time
		for i := range c.writers {
			first := writerStart(start, i, c.writers, c.txSize, c.rate)
			for k := range 5 {
				sends = append(sends, first.Add(time.Duration(k)*perWriter))
			}
		}
		slices.SortFunc(sends, func(a, b time.Time) int { return a.Compare(b) })
		for j := 1; j < len(sends); j++ {
			if gap := sends[j].Sub(sends[j-1]); gap != c.want {
				t.Errorf("%d writers, %d rows/tx at %.0f/s: sends %d and %d are %s apart, want %s", c.writers, c.txSize, c.rate, j-1, j, gap, c.want)
				break
			}
		}
	}
	if got := writerStart(start, 1, 2, 1, 0); !got.Equal(start) {
		t.Errorf("flat out: writer 1 starts at %s, want the start", got)
	}
}
