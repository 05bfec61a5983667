package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/jsonx"
)

// A conv appends the JSON form of one column value, given PostgreSQL's text
// output for it. Every conv writes valid JSON for any input: text that does
// not look like its type becomes a JSON string, never a broken frame.
type conv func(dst, text []byte) []byte

// typeInfo is what a Type message told us of a type without a built-in OID.
type typeInfo struct {
	namespace, name string
}

// convFor picks the conversion for a column type. pgx's type map knows the
// built-in types and their array element types; user types (enums,
// domains, composites) arrive as text and are sent as strings, or as arrays
// of strings for their array types, never as an error.
func convFor(m *pgtype.Map, oid uint32, user map[uint32]typeInfo) conv {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		return convInteger
	case pgtype.Float4OID, pgtype.Float8OID:
		return convFloat
	case pgtype.BoolOID:
		return convBool
	case pgtype.JSONOID, pgtype.JSONBOID:
		return convJSON
	case pgtype.TimestamptzOID:
		return convTimestamptz
	case pgtype.TimestampOID:
		return convTimestamp
	case pgtype.ByteaOID:
		return convBytea
	}
	if t, ok := m.TypeForOID(oid); ok {
		if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			delim := ac.Delimiter
			if delim == 0 {
				delim = ','
			}
			return arrayConv(convFor(m, ac.ElementType.OID, user), delim)
		}
	}
	if t, ok := user[oid]; ok && strings.HasPrefix(t.name, "_") {
		// A user type's array (an enum's, say) is named "_" + element name.
		return arrayConv(convString, ',')
	}
	// numeric, date, text, varchar, uuid, enums, intervals, unknown types.
	return convString
}

func convString(dst, text []byte) []byte { return jsonx.AppendString(dst, text) }

func convInteger(dst, text []byte) []byte {
	if !isInteger(text) {
		return convString(dst, text)
	}
	return append(dst, text...)
}

// isInteger reports whether b is an integer as JSON writes one: an
// optional minus sign, then 0 or digits without a leading zero ("00" is
// not JSON, although no integer column outputs it).
func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 20 || len(b) > 1 && b[0] == '0' {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// convFloat writes finite floats as numbers and NaN/Infinity, which JSON
// has no number for, as strings.
func convFloat(dst, text []byte) []byte {
	if !isJSONNumber(text) {
		return convString(dst, text)
	}
	return append(dst, text...)
}

// isJSONNumber checks the JSON number grammar, which PostgreSQL's float
// output ("1e+20", "-0.5") follows except for NaN and infinities.
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i - s
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

func convBool(dst, text []byte) []byte {
	switch string(text) {
	case "t":
		return append(dst, "true"...)
	case "f":
		return append(dst, "false"...)
	}
	return convString(dst, text)
}

// convJSON embeds json and jsonb values as they are: PostgreSQL validated
// them on the way in.
func convJSON(dst, text []byte) []byte {
	if !json.Valid(text) {
		return convString(dst, text)
	}
	return append(dst, text...)
}

// convTimestamptz writes RFC 3339 in UTC. The replication session runs with
// TimeZone=UTC, so the common case is a rewrite of "2026-11-25
// 12:00:00.123456+00"; other offsets go through pgx's parser.
func convTimestamptz(dst, text []byte) []byte {
	n := len(text)
	if n >= 22 && text[10] == ' ' && string(text[n-3:]) == "+00" && isDigits(text[:4]) && jsonSafe(text) {
		dst = append(dst, '"')
		dst = append(dst, text[:10]...)
		dst = append(dst, 'T')
		dst = append(dst, text[11:n-3]...)
		return append(dst, 'Z', '"')
	}
	var ts pgtype.Timestamptz
	if err := ts.Scan(string(text)); err != nil || ts.InfinityModifier != pgtype.Finite || !ts.Valid {
		return convString(dst, text) // infinity, -infinity, BC dates
	}
	dst = append(dst, '"')
	dst = ts.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// convTimestamp writes a timestamp without time zone in ISO 8601 form,
// without a zone, as the column has none.
func convTimestamp(dst, text []byte) []byte {
	if len(text) >= 19 && text[10] == ' ' && isDigits(text[:4]) && isDigits(text[11:13]) && jsonSafe(text) {
		dst = append(dst, '"')
		dst = append(dst, text[:10]...)
		dst = append(dst, 'T')
		dst = append(dst, text[11:]...)
		return append(dst, '"')
	}
	return convString(dst, text)
}

// jsonSafe reports whether b can be copied into a JSON string as it is:
// printable ASCII without quote or backslash. The timestamp fast paths
// copy PostgreSQL's text, which always is; anything else takes the slow,
// escaping path.
func jsonSafe(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// convBytea turns bytea's hex output ("\x0a0b") into base64.
func convBytea(dst, text []byte) []byte {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' || len(text)%2 != 0 {
		return convString(dst, text)
	}
	raw := make([]byte, (len(text)-2)/2)
	if _, err := hex.Decode(raw, text[2:]); err != nil {
		return convString(dst, text)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, raw)
	return append(dst, '"')
}
