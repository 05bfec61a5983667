package schema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Position identifies one row change in the order PostgreSQL committed it:
// the commit LSN of its transaction and its ordinal inside that transaction.
//
// Re-reading the same WAL after a crash yields the same Position for the
// same change, which is what lets the bus recognise a change it already
// stored. Its string form "LSN-ordinal" (both decimal) is the message id
// clients see and send back to resume; it is also a valid Redis stream id.
type Position struct {
	LSN uint64 // commit LSN of the transaction
	Seq uint64 // ordinal of the change within its transaction, from 0
}

// ErrBadPosition is returned by ParsePosition for text that is not an id.
var ErrBadPosition = errors.New("not a walcast message id")

// String returns the id form of p, e.g. "24681234-3".
func (p Position) String() string {
	b := make([]byte, 0, 32)
	return string(p.Append(b))
}

// Append appends the id form of p to b.
func (p Position) Append(b []byte) []byte {
	b = strconv.AppendUint(b, p.LSN, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, p.Seq, 10)
}

// IsZero reports whether p is the zero position (before every change).
func (p Position) IsZero() bool { return p.LSN == 0 && p.Seq == 0 }

// Less reports whether p comes before q in commit order.
func (p Position) Less(q Position) bool {
	if p.LSN != q.LSN {
		return p.LSN < q.LSN
	}
	return p.Seq < q.Seq
}

// ParsePosition parses an id produced by Position.String.
func ParsePosition(s string) (Position, error) {
	lsn, seq, ok := strings.Cut(s, "-")
	if !ok || lsn == "" || seq == "" {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
	}
	l, err := strconv.ParseUint(lsn, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
	}
	q, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
	}
	return Position{LSN: l, Seq: q}, nil
}
