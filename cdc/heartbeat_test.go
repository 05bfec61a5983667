package cdc

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// pgoutputMessage builds a protocol version 1 Message ('M').
func pgoutputMessage(transactional bool, prefix, content string) []byte {
	b := []byte{msgMessage, 0}
	if transactional {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, 0x16B374D848)
	b = append(b, prefix...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

func TestParseHeartbeat(t *testing.T) {
	at := time.Unix(1_800_000_000, 123456789)
	good := pgoutputMessage(false, heartbeatPrefix, heartbeatContent(at, "walcast"))
	tooLong := pgoutputMessage(false, heartbeatPrefix, "x")
	binary.BigEndian.PutUint32(tooLong[len(tooLong)-5:], 256) // says 256 bytes, holds 1
	if id, ok := parseHeartbeat(good, "walcast"); !ok || id != at.UnixNano() {
		t.Fatalf("parseHeartbeat = %d, %v; want %d, true", id, ok, at.UnixNano())
	}
	for name, msg := range map[string][]byte{
		"another slot's":  good,
		"another prefix":  pgoutputMessage(false, "app_event", heartbeatContent(at, "walcast")),
		"no slot":         pgoutputMessage(false, heartbeatPrefix, "1800000000123456789"),
		"not a number":    pgoutputMessage(false, heartbeatPrefix, "soon walcast"),
		"not a message":   append([]byte{msgBegin}, good[1:]...),
		"empty":           nil,
		"length too long": tooLong,
	} {
		slot := "walcast"
		if name == "another slot's" {
			slot = "other"
		}
		if id, ok := parseHeartbeat(msg, slot); ok {
			t.Errorf("%s: parsed as heartbeat %d", name, id)
		}
	}
	// Every truncation of a good message is refused, never a panic.
	for i := range good {
		if _, ok := parseHeartbeat(good[:i], "walcast"); ok {
			t.Errorf("truncated to %d bytes: parsed", i)
		}
	}
}

func FuzzParseHeartbeat(f *testing.F) {
	f.Add(pgoutputMessage(false, heartbeatPrefix, heartbeatContent(time.Unix(1, 2), "walcast")))
	f.Add(pgoutputMessage(true, "x", ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Its output is an id, not JSON: the contract is no panic, and no
		// heartbeat recognised in a message that is not one.
		if _, ok := parseHeartbeat(b, "walcast"); ok && (len(b) == 0 || b[0] != msgMessage) {
			t.Fatalf("%q: recognised as a heartbeat", b)
		}
	})
}

func TestLivenessHeartbeats(t *testing.T) {
	var l liveness
	t0 := time.Now()
	l.reset(livenessHeartbeat, t0)
	const threshold = 10 * time.Second
	if r := l.stall(t0.Add(time.Hour), threshold); r != "" {
		t.Errorf("stalled with no heartbeat out: %s", r)
	}

	// Three heartbeats go out; the second comes back: the first has passed
	// too (the WAL is read in order), the third is still out.
	b1, b2, b3 := t0, t0.Add(time.Second), t0.Add(2*time.Second)
	l.sent(b1)
	l.sent(b2)
	l.sent(b3)
	if !l.back(b2.UnixNano(), b2.Add(30*time.Millisecond)) {
		t.Fatal("heartbeat 2 not recognised")
	}
	if l.back(b1.UnixNano(), b2.Add(40*time.Millisecond)) {
		t.Error("heartbeat 1 recognised after 2 came back")
	}
	mode, lag, last := l.snapshot(b2.Add(31 * time.Millisecond))
	if mode != livenessHeartbeat || lag != 30*time.Millisecond || !last.Equal(b2.Add(30*time.Millisecond)) {
		t.Errorf("snapshot = %s %v %v", mode, lag, last)
	}
	// Heartbeat 3 is out for 5 s: lag is at least that, not yet a stall.
	if _, lag, _ := l.snapshot(b3.Add(5 * time.Second)); lag != 5*time.Second {
		t.Errorf("lag with a heartbeat out 5 s = %v", lag)
	}
	if r := l.stall(b3.Add(threshold), threshold); r != "" {
		t.Errorf("stalled at the threshold: %s", r)
	}
	r := l.stall(b3.Add(threshold+time.Millisecond), threshold)
	if !strings.Contains(r, "no heartbeat came back within 10s") {
		t.Errorf("stall reason = %q", r)
	}
	if l.stall(b3.Add(threshold+time.Millisecond), 0) != "" {
		t.Error("a 0 threshold detects stalls")
	}
	l.back(b3.UnixNano(), b3.Add(threshold+time.Second))
	if r := l.stall(b3.Add(threshold+2*time.Second), threshold); r != "" {
		t.Errorf("still stalled after the heartbeat came back: %s", r)
	}

	// A failed write is forgotten: it never comes back, and must not stall.
	b4 := t0.Add(time.Minute)
	l.sent(b4)
	l.unsent(b4)
	if r := l.stall(b4.Add(time.Hour), threshold); r != "" {
		t.Errorf("stalled on a heartbeat never written: %s", r)
	}

	// A new session forgets the old one's heartbeats.
	l.sent(b4)
	l.reset(livenessHeartbeat, b4.Add(time.Hour))
	if r := l.stall(b4.Add(2*time.Hour), threshold); r != "" {
		t.Errorf("stalled on the previous session's heartbeat: %s", r)
	}
}

func TestLivenessKeepalives(t *testing.T) {
	var l liveness
	t0 := time.Now()
	l.reset(livenessKeepalive, t0)
	if r := l.stall(t0.Add(5*time.Second), 10*time.Second); r != "" {
		t.Errorf("stalled 5 s after start: %s", r)
	}
	if r := l.stall(t0.Add(11*time.Second), 10*time.Second); !strings.Contains(r, "nothing received from the server for 11s") {
		t.Errorf("stall reason = %q", r)
	}
	l.heard.Store(t0.Add(10 * time.Second).UnixNano())
	if r := l.stall(t0.Add(11*time.Second), 10*time.Second); r != "" {
		t.Errorf("stalled 1 s after a keepalive: %s", r)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		-1: "unknown", 0: "0 bytes", 10239: "10239 bytes", 10240: "10 kB",
		512 << 20: "512 MB", 1 << 30: "1024 MB", 10 << 30: "10 GB", 3 << 40: "3072 GB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
