package broadcast

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/schema"
)

// A stream entry's scope fields fail closed: a committee or owner that is
// there but cannot be read (another writer, a damaged entry, an id out of
// range) makes the entry admin-only, never election-wide.
func TestStreamEntryScopeFailsClosed(t *testing.T) {
	cases := []struct {
		name      string
		values    map[string]any
		committee int64
		hasC      bool
		owner     int64
		hasO      bool
		adminOnly bool
	}{
		{"scoped", map[string]any{fieldCommittee: "3", fieldOwner: "12"}, 3, true, 12, true, false},
		{"election-wide", map[string]any{}, 0, false, 0, false, false},
		{"empty fields", map[string]any{fieldCommittee: "", fieldOwner: "", fieldAdminOnly: ""}, 0, false, 0, false, false},
		{"admin-only", map[string]any{fieldAdminOnly: "1"}, 0, false, 0, false, true},
		{"exact above 2^53", map[string]any{fieldOwner: "9007199254740993"}, 0, false, 9007199254740993, true, false},
		{"committee 3.00", map[string]any{fieldCommittee: "3.00", fieldOwner: "12"}, 0, false, 12, true, true},
		{"committee uuid", map[string]any{fieldCommittee: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, 0, false, 0, false, true},
		{"committee text", map[string]any{fieldCommittee: "north"}, 0, false, 0, false, true},
		{"committee padded", map[string]any{fieldCommittee: " 3"}, 0, false, 0, false, true},
		{"committee out of range", map[string]any{fieldCommittee: "9223372036854775808"}, 0, false, 0, false, true},
		{"owner float", map[string]any{fieldOwner: "12.5"}, 0, false, 0, false, true},
		{"owner not a string", map[string]any{fieldOwner: int64(12)}, 0, false, 0, false, true},
		{"unknown admin flag", map[string]any{fieldCommittee: "3", fieldAdminOnly: "yes"}, 3, true, 0, false, true},
	}
	for _, c := range cases {
		c.values[fieldJSON] = `{"type":"guarantee_update"}`
		c.values[fieldType] = schema.TypeGuarantee
		m, err := fromEntry(redis.XMessage{ID: "5-1", Values: c.values})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if m.Committee != c.committee || m.HasCommittee != c.hasC || m.Owner != c.owner || m.HasOwner != c.hasO || m.AdminOnly != c.adminOnly {
			t.Errorf("%s: committee %d,%v owner %d,%v admin-only %v; want %d,%v %d,%v %v", c.name,
				m.Committee, m.HasCommittee, m.Owner, m.HasOwner, m.AdminOnly, c.committee, c.hasC, c.owner, c.hasO, c.adminOnly)
		}
		// What that means for a committee member and the row's owner.
		member := &Principal{UserID: 12, HasUser: true, Role: "user", Committees: map[int64]bool{3: true}}
		if c.adminOnly && member.Allows(m) {
			t.Errorf("%s: a regular user may receive an entry whose scope is unreadable", c.name)
		}
	}
}
