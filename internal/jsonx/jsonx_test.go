package jsonx

import (
	"encoding/json"
	"testing"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "new\nline\ttab\rcr",
		"\x00\x01\x1f control", "héllo wörld ✓", "line\u2028sep\u2029", "emoji 🎉",
	} {
		got := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("AppendString(%q) = %s: not JSON: %v", s, got, err)
		}
		if back != s {
			t.Errorf("AppendString(%q) round-trips to %q", s, back)
		}
	}
}

func TestAppendStringReplacesInvalidUTF8(t *testing.T) {
	got := string(AppendString(nil, []byte{'a', 0xff, 'b'}))
	if got != `"a\ufffdb"` {
		t.Errorf("got %s", got)
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add([]byte("seed \" \\ \n é"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := AppendString(nil, b)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %q from %q", out, b)
		}
	})
}
