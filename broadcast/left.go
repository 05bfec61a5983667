package broadcast

import (
	"strings"

	"github.com/walcast/walcast/schema"
)

// Stream entry fields of a change that moved its row: the scope the row
// had ("committee,owner,admin", parts empty when absent; in the header
// since it has one, see fieldHeader) and the frame the connections it
// left receive.
const (
	fieldLeftScope = "l"
	fieldLeftJSON  = "lm"
)

// frameFor returns the frame of the change m that a connection of p with
// subscription f receives: m.JSON when it may see the change; m.LeftJSON
// when it may see only the scope the row had before (an UPDATE moved the
// row out of its view: see schema.Message.Left); nil when neither.
func frameFor(p *Principal, f *filter, m *schema.Message) []byte {
	if p.Allows(m) && f.allows(m) {
		return m.JSON
	}
	if l := m.Left; l != nil {
		before := schema.Message{Type: m.Type, Committee: l.Committee, HasCommittee: l.HasCommittee,
			Owner: l.Owner, HasOwner: l.HasOwner, AdminOnly: l.AdminOnly}
		if p.Allows(&before) && f.allows(&before) {
			return m.LeftJSON
		}
	}
	return nil
}

// decodeLeft sets m.Left and m.LeftJSON from the fields of a stream
// entry of the format before the header (see fieldHeader).
func decodeLeft(values map[string]any, m *schema.Message) {
	scope, _ := values[fieldLeftScope].(string)
	frame, _ := values[fieldLeftJSON].(string)
	decodeLeftScope(scope, frame, m)
}

// decodeLeftScope sets m.Left and m.LeftJSON from a stream entry's left
// scope ("committee,owner,admin", parts empty when absent) and frame.
// It fails closed: a part of the scope that cannot be read makes it
// admin-only (see entryID), and a damaged scope (another writer) sends no
// notice at all.
func decodeLeftScope(scope, frame string, m *schema.Message) {
	parts := strings.Split(scope, ",")
	if len(parts) != 3 || frame == "" {
		return
	}
	var l schema.Scope
	var badC, badO bool
	l.Committee, l.HasCommittee, badC = entryID(parts[0])
	l.Owner, l.HasOwner, badO = entryID(parts[1])
	l.AdminOnly = parts[2] != "" || badC || badO
	m.Left, m.LeftJSON = &l, []byte(frame)
}

// collectLeft adds to wake the clients of the scope l a row left; all is
// true when that scope was election-wide (everyone is woken). h.mu is
// held.
func (h *Hub) collectLeft(wake []*client, l *schema.Scope) (_ []*client, all bool) {
	if l.HasCommittee {
		wake = h.collect(wake, h.byCommittee[l.Committee])
	}
	if l.HasOwner {
		wake = h.collect(wake, h.byOwner[l.Owner])
	}
	return wake, !l.HasCommittee && !l.HasOwner && !l.AdminOnly
}
