package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// This file parses pgoutput's protocol version 1 messages. pglogrepl has a
// parser too, but it indexes its input without bounds checks (a truncated
// message panics) and allocates for every column; walcast's reader must
// never crash on bad input and runs once per row, so it parses into views
// of the input buffer instead.

// errShort reports a message that ends before its fields do.
var errShort = errors.New("message truncated")

// reader is a bounds-checked cursor over one message.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("read %s: %w", what, errShort)
	}
}

// fixed reads the next n bytes of a fixed-size field (n <= 8), or zeros
// when they are missing (r.err then says so).
func (r *reader) fixed(n int, what string) []byte {
	if b := r.bytes(n, what); b != nil {
		return b
	}
	return make([]byte, n)
}

func (r *reader) byte(what string) byte { return r.fixed(1, what)[0] }

func (r *reader) uint16(what string) uint16 { return binary.BigEndian.Uint16(r.fixed(2, what)) }

func (r *reader) uint32(what string) uint32 { return binary.BigEndian.Uint32(r.fixed(4, what)) }

func (r *reader) uint64(what string) uint64 { return binary.BigEndian.Uint64(r.fixed(8, what)) }

// cstring reads a NUL-terminated string.
func (r *reader) cstring(what string) string {
	if r.err != nil {
		return ""
	}
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.fail(what)
	return ""
}

// bytes returns a view of the next n bytes.
func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// pgEpoch is PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *reader) time(what string) time.Time {
	us := int64(r.uint64(what))
	return pgEpoch.Add(time.Duration(us) * time.Microsecond)
}

// Tuple column kinds.
const (
	colNull      = 'n'
	colUnchanged = 'u' // an unchanged TOASTed value the WAL did not carry
	colText      = 't'
	colBinary    = 'b'
)

// tupleCol is one column of a TupleData, viewing the message buffer.
type tupleCol struct {
	kind byte
	data []byte
}

// tuple reads a TupleData into cols (reused between calls).
func (r *reader) tuple(cols []tupleCol) []tupleCol {
	n := int(r.uint16("tuple column count"))
	cols = cols[:0]
	for i := 0; i < n && r.err == nil; i++ {
		c := tupleCol{kind: r.byte("tuple column kind")}
		switch c.kind {
		case colNull, colUnchanged:
		case colText, colBinary:
			l := r.uint32("tuple column length")
			if l > uint32(len(r.b)) {
				r.fail("tuple column value")
				return cols
			}
			c.data = r.bytes(int(l), "tuple column value")
		default:
			if r.err == nil {
				r.err = fmt.Errorf("tuple column %d: unknown kind %q", i, c.kind)
			}
			return cols
		}
		cols = append(cols, c)
	}
	return cols
}
