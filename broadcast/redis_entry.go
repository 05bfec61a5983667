package broadcast

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/schema"
)

// A stream entry is three fields: the header (fieldHeader), one short
// line per property of the message, the frame (fieldJSON), and
// fieldAdminOnly "1", which this version ignores when there is a header:
// a walcast before the header reads the entry as admin-only instead of
// election-wide (it reads scope from fields the entry lacks), so that a
// serve replica upgraded after capture fails closed. A change that moved
// its row adds the frame its old scope receives (fieldLeftJSON), and a
// dashboard repeats its type and key as fields of their own (fieldType,
// fieldDashboard), which tools tell dashboards apart by. Every field is a
// command argument and a value Redis stores, encodes for each reader and
// each reader parses: three fields instead of up to sixteen is most of
// what an append and a follower's read cost Redis.
//
// The header's lines, version first (headerVersion):
//
//	v1
//	committee      ("" for none)
//	owner          ("" for none)
//	flags          ("" or "a": admin-only)
//	type
//	dashboard key  ("" for a change)
//	left scope     ("committee,owner,admin" of a row an update moved; "" for none)
//	row op         (u, U oversized, d, c; "" when the message writes no row)
//	row key        (JSON text: no newline)
//	row old key
//	row table
//	unchanged columns, one JSON string a line (the rest of the header)
//
// so that in redis-cli a change reads
// "v1\n3\n12\n\nguarantee_update\n\n\nu\n[7]\n\npublic.guarantee". The
// scope comes first: nothing free-form can shift it. A type, dashboard
// key or table that holds a newline or begins with a double quote is
// written as a JSON string (see appendHeaderText).
//
// Entries written before the header (one field per property, see the
// field constants) are read too, entry by entry: a stream appended by an
// earlier version and then by this one reads as one history.
const (
	fieldHeader   = "h"
	headerVersion = "v1"
	// headerLines is how many lines a header has at least: every line
	// up to the table.
	headerLines = 11
)

// entryStride is how many arguments each message takes in the append
// and staging scripts (see appendEntryArgs for their order).
const entryStride = 13

// appendHeader appends the header of m's stream entry to b.
func appendHeader(b []byte, m *schema.Message) []byte {
	b = append(b, headerVersion...)
	b = append(b, '\n')
	b = appendRowScope(b, m, false)
	b = append(b, '\n')
	b = appendHeaderText(b, m.Type)
	b = append(b, '\n')
	b = appendHeaderText(b, m.DashboardKey)
	b = append(b, '\n')
	b = appendLeftScope(b, m.Left)
	b = append(b, '\n')
	r := m.Row
	if r == nil {
		return append(b, "\n\n\n"...)
	}
	b = append(b, rowOpCode(r)...)
	b = append(b, '\n')
	b = append(b, r.Key...)
	b = append(b, '\n')
	b = append(b, r.OldKey...)
	b = append(b, '\n')
	b = appendHeaderText(b, r.Table)
	for _, n := range r.Unchanged {
		b = append(b, '\n')
		b = jsonx.AppendString(b, n)
	}
	return b
}

// appendRowScope appends m's committee, owner and flags, a line each: the
// header's scope lines, and the middle of a live-state row record (see
// decodeStateRecord), whose flags are "1" for admin-only and "o" for an
// oversized row.
func appendRowScope(b []byte, m *schema.Message, record bool) []byte {
	if m.HasCommittee {
		b = strconv.AppendInt(b, m.Committee, 10)
	}
	b = append(b, '\n')
	if m.HasOwner {
		b = strconv.AppendInt(b, m.Owner, 10)
	}
	b = append(b, '\n')
	switch {
	case !record && m.AdminOnly:
		b = append(b, 'a')
	case record && m.AdminOnly:
		b = append(b, '1')
	}
	if record && m.Row != nil && m.Row.Oversized && m.Row.Op == schema.RowUpsert {
		b = append(b, 'o')
	}
	return b
}

// appendLeftScope appends the scope a moved row had, as
// "committee,owner,admin" (parts empty when absent); nothing for nil.
func appendLeftScope(b []byte, l *schema.Scope) []byte {
	if l == nil {
		return b
	}
	if l.HasCommittee {
		b = strconv.AppendInt(b, l.Committee, 10)
	}
	b = append(b, ',')
	if l.HasOwner {
		b = strconv.AppendInt(b, l.Owner, 10)
	}
	b = append(b, ',')
	if l.AdminOnly {
		b = append(b, '1')
	}
	return b
}

// appendHeaderText appends a free-form line of the header: as it is,
// unless it holds a newline or begins with a double quote, which would
// make it two lines or look quoted; then as a JSON string.
func appendHeaderText(b []byte, s string) []byte {
	if strings.IndexByte(s, '\n') < 0 && !strings.HasPrefix(s, `"`) {
		return append(b, s...)
	}
	return jsonx.AppendString(b, s)
}

// headerText reads a line appendHeaderText wrote; false when it is
// quoted but not a JSON string.
func headerText(s string) (string, bool) {
	if !strings.HasPrefix(s, `"`) {
		return s, true
	}
	var out string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return "", false
	}
	return out, true
}

// decodeEntry reads a stream entry, in either format (see fieldHeader),
// with the frame of a change (not a dashboard, which the hub keeps apart
// from its window) copied into pack; nil pack copies nothing. An entry
// without a frame was not written by walcast: an error, which readers log
// and skip.
//
// Scope fails closed: a committee or owner that is there but cannot be
// read (another writer, a damaged entry), an unknown flag, or a header
// that is there but unreadable (another version, damaged) make the entry
// admin-only instead of election-wide. An absent or empty committee or
// owner means none.
func decodeEntry(x redis.XMessage, pack *jsonPack) (*schema.Message, error) {
	pos, err := schema.ParsePosition(x.ID)
	if err != nil {
		return nil, fmt.Errorf("stream entry %s: %w", x.ID, err)
	}
	frame, ok := x.Values[fieldJSON].(string)
	if !ok {
		return nil, fmt.Errorf("stream entry %s has no message", x.ID)
	}
	m := &schema.Message{Pos: pos}
	if h, ok := x.Values[fieldHeader]; ok {
		hs, _ := h.(string)
		left, _ := x.Values[fieldLeftJSON].(string)
		decodeHeader(hs, left, m)
	} else {
		decodeFields(x.Values, m)
	}
	if m.DashboardKey != "" {
		pack = nil
	}
	m.JSON = pack.bytes(frame)
	return m, nil
}

// decodeHeader sets m's scope, type, dashboard key and left scope from a
// header (see fieldHeader) and the frame for the left scope (""
// for none). An unreadable header makes m admin-only, and nothing else of
// it is trusted.
func decodeHeader(h, leftFrame string, m *schema.Message) {
	var lines [7]string
	rest := h
	for i := range lines {
		var ok bool
		if lines[i], rest, ok = strings.Cut(rest, "\n"); !ok {
			m.AdminOnly = true
			return
		}
	}
	// The row's lines are the live state's (the scripts read them): they
	// must be there, or the header is damaged.
	if lines[0] != headerVersion || strings.Count(rest, "\n") < headerLines-len(lines)-1 {
		m.AdminOnly = true
		return
	}
	typ, okT := headerText(lines[4])
	dash, okD := headerText(lines[5])
	if !okT || !okD {
		m.AdminOnly = true
		return
	}
	var badC, badO bool
	m.Committee, m.HasCommittee, badC = entryID(lines[1])
	m.Owner, m.HasOwner, badO = entryID(lines[2])
	m.AdminOnly = lines[3] != "" || badC || badO // "a", or a flag walcast never writes
	m.Type, m.DashboardKey = internType(typ), strings.Clone(dash)
	decodeLeftScope(lines[6], leftFrame, m)
}

// internType returns walcast's own constant for a known type: a message
// kept in the hub's window then does not hold its entry's header.
func internType(t string) string {
	for _, k := range [...]string{schema.TypeGuarantee, schema.TypeAttendance, schema.TypeVoting, schema.TypeDashboard} {
		if t == k {
			return k
		}
	}
	return strings.Clone(t)
}

// decodeFields reads the entries walcast wrote before the header: one
// field per property.
func decodeFields(values map[string]any, m *schema.Message) {
	m.Type, _ = values[fieldType].(string)
	m.DashboardKey, _ = values[fieldDashboard].(string)
	var badCommittee, badOwner bool
	m.Committee, m.HasCommittee, badCommittee = entryID(values[fieldCommittee])
	m.Owner, m.HasOwner, badOwner = entryID(values[fieldOwner])
	switch values[fieldAdminOnly] {
	case nil, "":
		m.AdminOnly = badCommittee || badOwner
	default: // "1", or a value walcast never writes
		m.AdminOnly = true
	}
	decodeLeft(values, m)
}

// entryID reads a committee or owner field of a stream entry: absent or
// empty is no id; anything but an exact 64-bit integer is unreadable.
func entryID(v any) (id int64, ok, unreadable bool) {
	s, isString := v.(string)
	switch {
	case v == nil || isString && s == "":
		return 0, false, false
	case !isString:
		return 0, false, true
	}
	id, err := schema.ParseID(s)
	if err != nil {
		return 0, false, true
	}
	return id, true, false
}

// argSpan is one argument of the append and staging scripts: bytes that
// go-redis writes as they are (encoding.BinaryMarshaler). A pointer to
// one goes into the command's arguments, which costs no allocation, where
// a string or []byte would cost one each.
type argSpan struct {
	b        []byte
	off, end int // in entryArgs.buf, until resolve
}

// MarshalBinary returns the argument's bytes.
func (s *argSpan) MarshalBinary() ([]byte, error) { return s.b, nil }

// entryArgs builds the scripts' arguments for a chunk of messages with a
// few allocations per chunk instead of a dozen per message: the text
// walcast writes (ids, headers, row records' scope) goes into one buffer.
type entryArgs struct {
	buf   []byte
	spans []argSpan // never grown: the arguments point into it
	args  []any
	inBuf []int // the spans to point into buf once it is complete
}

// entryArgsPool keeps builders between appends: their buffers are most
// of what an append allocates, and capture appends without pause.
var entryArgsPool sync.Pool

// newEntryArgs returns a builder for n messages, after the arguments
// head; release it once the command was sent.
func newEntryArgs(n int, head ...any) *entryArgs {
	a, _ := entryArgsPool.Get().(*entryArgs)
	if a == nil || cap(a.spans) < 5*n {
		a = &entryArgs{buf: make([]byte, 0, 384*n), spans: make([]argSpan, 0, 5*n),
			args: make([]any, 0, len(head)+entryStride*n), inBuf: make([]int, 0, 3*n)}
	}
	return a.add(head...)
}

// release returns a to the pool, holding no message.
func (a *entryArgs) release() {
	clear(a.spans)
	clear(a.args)
	a.buf, a.spans, a.args, a.inBuf = a.buf[:0], a.spans[:0], a.args[:0], a.inBuf[:0]
	entryArgsPool.Put(a)
}

func (a *entryArgs) add(args ...any) *entryArgs {
	a.args = append(a.args, args...)
	return a
}

// bytes adds b as an argument, "" when empty.
func (a *entryArgs) bytes(b []byte) {
	if len(b) == 0 {
		a.args = append(a.args, "")
		return
	}
	a.spans = append(a.spans, argSpan{b: b})
	a.args = append(a.args, &a.spans[len(a.spans)-1])
}

// text adds the bytes written to buf since off as an argument.
func (a *entryArgs) text(off int) {
	a.inBuf = append(a.inBuf, len(a.spans))
	a.spans = append(a.spans, argSpan{off: off, end: len(a.buf)})
	a.args = append(a.args, &a.spans[len(a.spans)-1])
}

// str adds *s as an argument: a pointer, which costs no allocation.
func (a *entryArgs) str(s *string) {
	if *s == "" {
		a.args = append(a.args, "")
		return
	}
	a.args = append(a.args, s)
}

// message adds m's arguments: id, header, frame, left frame, dashboard
// key, dashboard record, type, row op, table, key, old key, unchanged
// columns (JSON strings, one a line), and an upsert's row record for the
// live state (see decodeStateRecord; "" for other ops).
func (a *entryArgs) message(m *schema.Message) {
	off := len(a.buf)
	a.buf = m.Pos.Append(a.buf)
	a.text(off)
	off = len(a.buf)
	a.buf = appendHeader(a.buf, m)
	a.text(off)
	a.bytes(m.JSON)
	a.bytes(m.LeftJSON)
	if m.DashboardKey != "" {
		// The newest of each dashboard, for replicas that start after
		// it was appended (the stream may have trimmed it).
		a.add(m.DashboardKey, encodeDashboard(m))
	} else {
		a.add("", "")
	}
	a.str(&m.Type)
	r := m.Row
	if r == nil {
		a.add("", "", "", "", "", "")
		return
	}
	a.add(rowOpArg(r))
	a.str(&r.Table)
	a.str(&r.Key)
	a.str(&r.OldKey)
	if len(r.Unchanged) > 0 {
		a.add(luaNames(r.Unchanged))
	} else {
		a.add("")
	}
	if r.Op != schema.RowUpsert {
		a.add("")
		return
	}
	off = len(a.buf)
	a.buf = m.Pos.Append(a.buf)
	a.buf = append(a.buf, '\n')
	a.buf = appendRowScope(a.buf, m, true)
	a.buf = append(a.buf, '\n')
	a.buf = append(a.buf, r.Data...)
	a.text(off)
}

// The row ops as arguments: an interface holding a string made at run
// time costs an allocation, these were made once.
var rowOpArgs = map[string]any{"u": "u", "U": "U", "d": "d", "c": "c", "": ""}

// rowOpArg returns rowOpCode(r) as an argument.
func rowOpArg(r *schema.RowRef) any { return rowOpArgs[rowOpCode(r)] }

// resolve points the text arguments into the complete buffer and returns
// the arguments.
func (a *entryArgs) resolve() []any {
	for _, i := range a.inBuf {
		s := &a.spans[i]
		s.b = a.buf[s.off:s.end:s.end]
	}
	return a.args
}
