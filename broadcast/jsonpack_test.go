package broadcast

import (
	"runtime"
	"strings"
	"testing"
)

func TestJSONPackCopies(t *testing.T) {
	var p jsonPack
	a := p.bytes(`{"id":"1"}`)
	b := p.bytes(`{"id":"22"}`)
	if string(a) != `{"id":"1"}` || string(b) != `{"id":"22"}` {
		t.Fatalf("got %q %q", a, b)
	}
	if cap(a) != len(a) {
		t.Fatalf("cap %d, len %d: an append could write into the next frame", cap(a), len(a))
	}
	a = append(a, 'x')
	if string(b) != `{"id":"22"}` {
		t.Fatalf("an append to one frame changed the next: %q", b)
	}
	big := strings.Repeat("x", jsonPackChunk/16+1)
	if got := p.bytes(big); string(got) != big {
		t.Fatal("large frame differs")
	}
	// Across chunks.
	for i := range 2 * jsonPackChunk / 400 {
		s := strings.Repeat(string(rune('a'+i%26)), 400)
		if got := p.bytes(s); string(got) != s {
			t.Fatalf("frame %d differs", i)
		}
	}
	var nilPack *jsonPack
	if got := nilPack.bytes("abc"); string(got) != "abc" {
		t.Fatalf("nil pack: %q", got)
	}
}

// TestJSONPackWindowHeap holds a window of frames whose length crosses the
// allocator's 416-byte class, packed and on their own: packed, the heap
// grows by the bytes added, not by a size class per frame.
func TestJSONPackWindowHeap(t *testing.T) {
	const window = 1 << 14
	measure := func(p *jsonPack, size int) uint64 {
		frames := make([][]byte, window)
		s := strings.Repeat("x", size)
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range frames {
			frames[i] = p.bytes(s)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(frames)
		return m1.HeapAlloc - m0.HeapAlloc
	}
	own := measure(nil, 417)
	packed := measure(&jsonPack{}, 417)
	if per := float64(own) / window; per < 440 {
		t.Logf("frames on their own: %.0f bytes each (the 448-byte class expected)", per)
	}
	if per := float64(packed) / window; per > 425 {
		t.Errorf("packed frames of 417 bytes: %.0f bytes each, want about 417", per)
	}
}

// BenchmarkJSONPack is the follower's copy of one change frame (about
// 400 bytes) into the window: packed, and on its own.
func BenchmarkJSONPack(b *testing.B) {
	s := strings.Repeat("x", 400)
	b.Run("packed", func(b *testing.B) {
		var p jsonPack
		b.ReportAllocs()
		for range b.N {
			sink = p.bytes(s)
		}
	})
	b.Run("own", func(b *testing.B) {
		var p *jsonPack
		b.ReportAllocs()
		for range b.N {
			sink = p.bytes(s)
		}
	})
}

var sink []byte
