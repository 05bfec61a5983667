package main

import (
	"fmt"
	"testing"
	"time"
)

// Client 0's latency is cut at the frame's timestamp, the last one in the
// frame (a row's own timestamp columns come before it), for walcast's
// frames and the minimal server's alike.
func TestSplitAtCommit(t *testing.T) {
	commit := time.Date(2026, 12, 2, 12, 0, 0, 123456000, time.UTC)
	sent := commit.Add(-700 * time.Microsecond).UnixNano()
	read := commit.Add(2 * time.Millisecond).UnixNano()
	walcast := fmt.Sprintf(`{"id":"1-0","type":"guarantee_update","data":{"notes":"%d:xx","created_at":"2026-12-02T11:00:00Z"},"timestamp":"2026-12-02T12:00:00.123456Z"}`, sent)
	minimal := string(sampleFrame(nil, 1, commit, 32))
	for name, frame := range map[string]string{"walcast": walcast, "minimal": minimal} {
		at, ok := commitAt([]byte(frame))
		if !ok || at != commit.UnixNano() {
			t.Errorf("%s: commitAt = %v, %v; want %v", name, time.Unix(0, at).UTC(), ok, commit)
		}
	}
	var s splitHist
	s.record([]byte(walcast), sent, read)
	s.record([]byte(`{"type":"welcome"}`), sent, read) // no timestamp: not counted
	if n := s.fromCommit.Count(); n != 1 {
		t.Fatalf("recorded %d frames, want 1", n)
	}
	if got, want := s.toCommit.Max(), 700*time.Microsecond; got != want {
		t.Errorf("writer → commit = %s, want %s", got, want)
	}
	if got, want := s.fromCommit.Max(), 2*time.Millisecond; got != want {
		t.Errorf("commit → client = %s, want %s", got, want)
	}
}
