package cdc

import (
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestValueConversions(t *testing.T) {
	m := pgtype.NewMap()
	user := map[uint32]typeInfo{90001: {"public", "mood"}, 90002: {"public", "_mood"}}
	cases := []struct {
		oid  uint32
		text string
		want string
	}{
		{pgtype.Int4OID, "42", `42`},
		{pgtype.Int8OID, "-9223372036854775808", `-9223372036854775808`},
		{pgtype.Int4OID, "4x", `"4x"`}, // never broken JSON
		{pgtype.Int4OID, "00", `"00"`}, // not a JSON number
		{pgtype.Int4OID, "-01", `"-01"`},
		{pgtype.Int4OID, "0", `0`},
		{pgtype.Int4OID, "-0", `-0`},
		{pgtype.Int4ArrayOID, "{00,0000000000000}", `["00","0000000000000"]`}, // found by FuzzValues
		{pgtype.Float8OID, "1e+20", `1e+20`},
		{pgtype.Float8OID, "-0.5", `-0.5`},
		{pgtype.Float8OID, "NaN", `"NaN"`},
		{pgtype.Float4OID, "Infinity", `"Infinity"`},
		{pgtype.Float8OID, "01", `"01"`},
		{pgtype.NumericOID, "3.14159", `"3.14159"`},
		{pgtype.BoolOID, "t", `true`},
		{pgtype.BoolOID, "f", `false`},
		{pgtype.TextOID, "a \"q\" \\ \n", `"a \"q\" \\ \n"`},
		{pgtype.TimestamptzOID, "2026-11-25 12:00:00.123456+00", `"2026-11-25T12:00:00.123456Z"`},
		{pgtype.TimestamptzOID, "2026-11-25 12:00:00+00", `"2026-11-25T12:00:00Z"`},
		{pgtype.TimestamptzOID, "2026-11-25 14:30:00+02:30", `"2026-11-25T12:00:00Z"`},
		{pgtype.TimestamptzOID, "infinity", `"infinity"`},
		{pgtype.TimestampOID, "2026-11-25 12:00:00.5", `"2026-11-25T12:00:00.5"`},
		{pgtype.TimestampOID, "2026-01-01 00:00:00 BC", `"2026-01-01T00:00:00 BC"`},
		{pgtype.TimestampOID, "2026-11-25 12:00:00\"x", `"2026-11-25 12:00:00\"x"`},     // never copied raw
		{pgtype.TimestamptzOID, "0000000000 0000000\"+00", `"0000000000 0000000\"+00"`}, // found by FuzzValues
		{pgtype.DateOID, "2026-11-25", `"2026-11-25"`},
		{pgtype.JSONBOID, `{"a": [1, null]}`, `{"a": [1, null]}`},
		{pgtype.JSONOID, `{not json`, `"{not json"`},
		{pgtype.ByteaOID, `\x00ff10`, `"AP8Q"`},
		{pgtype.ByteaOID, `\xzz`, `"\\xzz"`},
		{pgtype.Int4ArrayOID, "{1,2,NULL}", `[1,2,null]`},
		{pgtype.Int4ArrayOID, "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{pgtype.Int4ArrayOID, "[0:1]={7,8}", `[7,8]`},
		{pgtype.TextArrayOID, `{"a b","c\"d",NULL,"NULL",plain}`, `["a b","c\"d",null,"NULL","plain"]`},
		{pgtype.TextArrayOID, `{}`, `[]`},
		{pgtype.TextArrayOID, `{unterminated`, `"{unterminated"`},
		{pgtype.TimestamptzArrayOID, `{"2026-11-25 12:00:00+00"}`, `["2026-11-25T12:00:00Z"]`},
		{pgtype.NumericArrayOID, `{1.5,2}`, `["1.5","2"]`},
		{90001, "happy", `"happy"`},
		{90002, "{happy,sad}", `["happy","sad"]`},
		{99999, "anything", `"anything"`}, // unknown type OID: text
		{pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
	}
	for _, c := range cases {
		got := string(convFor(m, c.oid, user)(nil, []byte(c.text)))
		if got != c.want {
			t.Errorf("oid %d %q: got %s, want %s", c.oid, c.text, got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("oid %d %q: invalid JSON %s", c.oid, c.text, got)
		}
	}
}

// FuzzValues checks that every conversion writes valid JSON for any text.
func FuzzValues(f *testing.F) {
	f.Add(uint32(pgtype.Int4ArrayOID), "{{1,2},{3,NULL}}")
	f.Add(uint32(pgtype.TimestamptzOID), "2026-11-25 12:00:00+00")
	f.Add(uint32(pgtype.TextArrayOID), `{"a\"b",c}`)
	m := pgtype.NewMap()
	f.Fuzz(func(t *testing.T, oid uint32, text string) {
		out := convFor(m, oid, nil)(nil, []byte(text))
		if !json.Valid(out) {
			t.Fatalf("oid %d %q: invalid JSON %q", oid, text, out)
		}
	})
}

func BenchmarkDecodeInsert(b *testing.B) {
	msgs := loadFixture(b, "guarantee_lifecycle")
	d := NewDecoder()
	// Relation and the insert transaction: B, R, I, C.
	var insert []byte
	for _, m := range msgs {
		if m[0] == msgInsert && insert == nil {
			insert = m
		}
		if _, err := d.Decode(m); err != nil {
			b.Fatal(err)
		}
	}
	begin := []byte{msgBegin, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	b.ReportAllocs()
	b.SetBytes(int64(len(insert)))
	for b.Loop() {
		d.tx = nil
		if _, err := d.Decode(begin); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Decode(insert); err != nil {
			b.Fatal(err)
		}
	}
}

// Values of earlier changes must survive later ones: the decoder carves
// them out of shared chunks.
func TestDecodedValuesAreNotOverwritten(t *testing.T) {
	d := NewDecoder()
	var pieces []*Piece
	for _, name := range []string{"guarantee_lifecycle", "key_identity_and_toast", "multi_row_and_truncate", "types"} {
		for _, m := range loadFixture(t, name) {
			p, err := d.Decode(m)
			if err != nil {
				t.Fatal(err)
			}
			if p != nil {
				pieces = append(pieces, p)
			}
		}
	}
	// Decode everything again with a fresh decoder and compare.
	d2 := NewDecoder()
	i := 0
	for _, name := range []string{"guarantee_lifecycle", "key_identity_and_toast", "multi_row_and_truncate", "types"} {
		for _, m := range loadFixture(t, name) {
			p, _ := d2.Decode(m)
			if p == nil {
				continue
			}
			for j := range p.Changes {
				a, b := rowJSON(pieces[i].Changes[j].New), rowJSON(p.Changes[j].New)
				if string(a) != string(b) {
					t.Fatalf("piece %d change %d changed after later decoding:\n%s\n%s", i, j, a, b)
				}
			}
			i++
		}
	}
}
