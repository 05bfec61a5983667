package cdc

import (
	"strings"
	"testing"

	"github.com/walcast/walcast/schema"
)

func TestDivergedHistories(t *testing.T) {
	o := schema.Origin{SystemID: "7300000000000000001", Timeline: 1, Slot: "walcast"}
	top := schema.Position{LSN: 0x3000000, Seq: 2}
	other := o
	other.SystemID = "7300000000000000002"
	tl2 := o
	tl2.Timeline = 2
	for _, tc := range []struct {
		name string
		in   lineageInput
		want string // "" continues; else a part of the reason
	}{
		{"nothing stored", lineageInput{cur: other, top: schema.Position{}, walEnd: 1}, ""},
		{"same database, slot kept", lineageInput{recorded: true, rec: o, cur: o, top: top, walEnd: 0x3000100, slotExists: true}, ""},
		{"no origin recorded yet (upgrade)", lineageInput{cur: o, top: top, walEnd: 0x3000100, slotExists: true}, ""},
		{"another cluster", lineageInput{recorded: true, rec: o, cur: other, top: top, walEnd: 0x9000000, slotExists: true}, "another cluster"},
		{"positions went back", lineageInput{recorded: true, rec: o, cur: o, top: top, walEnd: 0x2000000, slotExists: true}, "beyond this database's WAL end"},
		{"stored up to the WAL end exactly", lineageInput{recorded: true, rec: o, cur: o, top: top, walEnd: 0x3000000, slotExists: true}, "beyond"},
		{"slot had to be created", lineageInput{recorded: true, rec: o, cur: o, top: top, walEnd: 0x9000000}, "does not exist"},
		{"failover before the stored top", lineageInput{recorded: true, rec: o, cur: tl2, top: top, walEnd: 0x9000000, slotExists: true, switchPoint: 0x2800000, switchKnown: true}, "branched off"},
		{"failover after the stored top", lineageInput{recorded: true, rec: o, cur: tl2, top: top, walEnd: 0x9000000, slotExists: true, switchPoint: 0x3000200, switchKnown: true}, ""},
		{"timeline not in history", lineageInput{recorded: true, rec: o, cur: tl2, top: top, walEnd: 0x9000000, slotExists: true}, "not in the history"},
		{"back to an earlier timeline", lineageInput{recorded: true, rec: tl2, cur: o, top: top, walEnd: 0x9000000, slotExists: true}, "earlier timeline"},
	} {
		got := diverged(tc.in)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: diverged = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseTimelineHistory(t *testing.T) {
	h := "1\t0/3000000\tno recovery target specified\n\n2\t0/5A0B1C8\tat restore point \"x\"\n"
	for _, tc := range []struct {
		tli  int32
		want uint64
		ok   bool
	}{{1, 0x3000000, true}, {2, 0x5A0B1C8, true}, {3, 0, false}} {
		got, ok := parseTimelineHistory(h, tc.tli)
		if got != tc.want || ok != tc.ok {
			t.Errorf("timeline %d: %x %v, want %x %v", tc.tli, got, ok, tc.want, tc.ok)
		}
	}
}
