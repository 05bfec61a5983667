package schema

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
)

// Kind is one of the four election tables walcast knows how to turn into
// messages. A tracked table of any name is mapped to one kind.
type Kind string

// The kinds of tracked table.
const (
	KindGuarantee       Kind = "guarantee"
	KindAttendance      Kind = "attendance"
	KindVoteCount       Kind = "vote_count"
	KindElectionResults Kind = "election_results"
)

// Kinds lists the known kinds in their default order.
var Kinds = []Kind{KindGuarantee, KindAttendance, KindVoteCount, KindElectionResults}

// DefaultTables is the default value of --tables.
const DefaultTables = "guarantee,attendance,vote_count,election_results"

// Columns that scope delivery. Django names a ForeignKey's column <field>_id,
// so the models' `committee` and `user` fields land here unchanged.
const (
	CommitteeColumn = "committee_id"
	OwnerColumn     = "user_id"
)

// RoutingColumns are the columns kept even when a row is too large to send
// whole: enough for the client to identify the row and for delivery to
// scope it.
var RoutingColumns = []string{"id", CommitteeColumn, OwnerColumn}

// NoColumn as a Table's Committee or Owner means the table has no such
// routing column: its rows are not scoped by it (config file: none).
const NoColumn = "-"

// Table is one tracked table and the kind of message it produces. The
// fields after Kind come from a config file; their zero values are
// --tables' behaviour.
type Table struct {
	Schema string // "public" unless the configuration qualified the name
	Name   string
	Kind   Kind // "" for a custom table: Type names its messages
	// Type is the message type of the table's changes; "" is the kind's
	// (guarantee_update, attendance_update, voting_update).
	Type string
	// Committee and Owner name the routing columns; "" is committee_id
	// and user_id, NoColumn none.
	Committee, Owner string
	// Columns limits which columns leave walcast; nil: all of them.
	// A pointer keeps Table comparable.
	Columns *ColumnFilter
	// Dashboard names the columns the dashboards read; nil: walcast's
	// own names (schema/election.sql).
	Dashboard *DashboardColumns
	// Key lists the primary key's columns in key order, from the catalog
	// (cdc looks them up at start); nil: the table has no primary key and
	// therefore no live state.
	Key []string
}

// ColumnFilter says which of a table's columns leave walcast. Columns it
// drops appear in no message: not in data, old, unchanged or omitted.
// The routing columns always leave, since delivery is scoped by them.
type ColumnFilter struct {
	Exclude []string // these never leave
	Include []string // when set, only these (and the routing columns) leave
}

// DashboardColumns names the columns the dashboards aggregate, for tables
// whose names differ from walcast's own. An empty field is walcast's
// default name; NoColumn means the schema has none and the dashboard
// field it feeds is left out.
type DashboardColumns struct {
	Status   string // guarantee: the status column (default status)
	Attended string // attendance: the attended flag (default attended)
	Votes    string // vote_count: the votes column (default votes)
	Electors string // committee table's electors count (default electors_count)
	// StatusValues maps the application's status values to walcast's
	// strong, medium and weak ("HIGH" → "strong"); values not in it are
	// counted by their own name.
	StatusValues map[string]string
}

// CommitteeCol returns the committee routing column, "" when there is none.
func (t Table) CommitteeCol() string { return routingCol(t.Committee, CommitteeColumn) }

// OwnerCol returns the owner routing column, "" when there is none.
func (t Table) OwnerCol() string { return routingCol(t.Owner, OwnerColumn) }

func routingCol(set, def string) string {
	switch set {
	case "":
		return def
	case NoColumn:
		return ""
	}
	return set
}

// Routing returns the table's routing columns, committee first.
func (t Table) Routing() []string {
	var cols []string
	for _, c := range [2]string{t.CommitteeCol(), t.OwnerCol()} {
		if c != "" {
			cols = append(cols, c)
		}
	}
	return cols
}

// MessageType returns the type of the messages the table's changes make.
func (t Table) MessageType() string {
	if t.Type != "" {
		return t.Type
	}
	return messageType(t.Kind)
}

// Leaves reports whether the column may appear in messages.
func (t Table) Leaves(col string) bool {
	if t.Columns == nil {
		return true
	}
	for _, r := range t.Routing() {
		if col == r {
			return true
		}
	}
	if len(t.Columns.Include) > 0 && !slices.Contains(t.Columns.Include, col) {
		return false
	}
	return !slices.Contains(t.Columns.Exclude, col)
}

// ElectorsSource returns, for a guarantee table, where the dashboards'
// electors count comes from: the committee table (quoted) and its column;
// table "" when there is none (electors: none). The committee table's id
// column is the committee id.
func (t Table) ElectorsSource() (table, column string) {
	set := ""
	if t.Dashboard != nil {
		set = t.Dashboard.Electors
	}
	switch set {
	case NoColumn:
		return "", ""
	case "":
		return QuoteIdent(t.Schema) + ".committee", "electors_count"
	}
	i := strings.LastIndexByte(set, '.')
	if i < 0 {
		return QuoteIdent(t.Schema) + ".committee", set
	}
	tbl := set[:i]
	if !strings.Contains(tbl, ".") {
		tbl = t.Schema + "." + tbl
	}
	s, n, _ := strings.Cut(tbl, ".")
	return QuoteIdent(s) + "." + QuoteIdent(n), set[i+1:]
}

// Label is how messages about the table name what it is tracked as: its
// kind, or its message type for a custom table.
func (t Table) Label() string {
	if t.Kind == "" {
		return t.MessageType()
	}
	return string(t.Kind)
}

// Qualified returns "schema.name".
func (t Table) Qualified() string { return t.Schema + "." + t.Name }

// QuotedIdent returns the table as an SQL identifier, for statements that
// name it, quoted only where PostgreSQL needs it.
func (t Table) QuotedIdent() string {
	return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name)
}

// QuoteIdent returns s as an SQL identifier: bare when it is a plain
// lower-case name, so that fixes walcast prints read as people write them,
// and double-quoted otherwise.
func QuoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain && !reserved[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// reserved are SQL keywords that cannot be bare table, role or
// publication names; a name among them is quoted.
var reserved = map[string]bool{
	"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true, "as": true,
	"asc": true, "both": true, "case": true, "cast": true, "check": true, "collate": true, "column": true,
	"constraint": true, "create": true, "default": true, "desc": true, "distinct": true, "do": true,
	"else": true, "end": true, "except": true, "false": true, "for": true, "foreign": true, "from": true,
	"grant": true, "group": true, "having": true, "in": true, "into": true, "limit": true, "not": true,
	"null": true, "offset": true, "on": true, "only": true, "or": true, "order": true, "primary": true,
	"references": true, "select": true, "table": true, "then": true, "to": true, "true": true,
	"union": true, "unique": true, "user": true, "using": true, "when": true, "where": true, "with": true,
}

// ParseTables parses the --tables value: a comma-separated list of table
// names, each either one of the four kinds ("guarantee") or "name=kind"
// ("guarantees_guarantee=guarantee"), optionally schema-qualified
// ("election.guarantee").
func ParseTables(spec string) ([]Table, error) {
	var tables []Table
	seen := map[string]bool{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, kind, hasKind := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !hasKind {
			kind = name
			if i := strings.LastIndexByte(kind, '.'); i >= 0 {
				kind = kind[i+1:]
			}
		}
		k := Kind(strings.TrimSpace(kind))
		if !k.valid() {
			return nil, fmt.Errorf("table %q: unknown kind %q (want one of guarantee, attendance, vote_count, election_results; write name=kind for a differently named table)", item, k)
		}
		t := Table{Schema: "public", Name: name, Kind: k}
		if s, n, ok := strings.Cut(name, "."); ok {
			t.Schema, t.Name = s, n
		}
		if t.Name == "" || t.Schema == "" {
			return nil, fmt.Errorf("table %q: empty name", item)
		}
		if seen[t.Qualified()] {
			return nil, fmt.Errorf("table %q listed twice", t.Qualified())
		}
		seen[t.Qualified()] = true
		tables = append(tables, t)
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("no tables to track")
	}
	return tables, nil
}

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool { return k.valid() }

func (k Kind) valid() bool {
	for _, known := range Kinds {
		if k == known {
			return true
		}
	}
	return false
}

// Router turns committed changes of tracked tables into messages.
type Router struct {
	tables map[string]*Table // by qualified name
	// keys holds the primary key columns by qualified name, from SetKeys
	// (the catalog, read by cdc at each session's start) or the tables'
	// Key; a table without one has no live state.
	keys atomic.Pointer[map[string][]string]
}

// NewRouter returns a Router for the given tracked tables.
func NewRouter(tables []Table) *Router {
	r := &Router{tables: make(map[string]*Table, len(tables))}
	keys := map[string][]string{}
	for i := range tables {
		t := tables[i]
		r.tables[t.Qualified()] = &t
		if len(t.Key) > 0 {
			keys[t.Qualified()] = t.Key
		}
	}
	r.keys.Store(&keys)
	return r
}

// SetKeys sets the primary key columns of the tracked tables, by
// qualified name, in key order; a table left out has no primary key. cdc
// reads them from the catalog at each session's start; Route may run
// meanwhile.
func (r *Router) SetKeys(keys map[string][]string) {
	keys = maps.Clone(keys)
	r.keys.Store(&keys)
}

// Keyed reports whether the table (qualified) has a primary key, so that
// its changes carry their row and it may hold live state. Load the state
// of keyed tables only: a table without a key would hold no rows, which a
// sync would take for an empty table.
func (r *Router) Keyed(table string) bool { return len((*r.keys.Load())[table]) > 0 }

// Tracks reports whether the table is tracked, and as which kind.
func (r *Router) Tracks(schemaName, table string) (Kind, bool) {
	t, ok := r.tables[schemaName+"."+table]
	if !ok {
		return "", false
	}
	return t.Kind, true
}

// Route returns the message for one change of tx. ok is false for a table
// that is not tracked, which a correctly configured publication never sends.
func (r *Router) Route(tx *Tx, ch *Change) (m Message, ok bool) {
	t, ok := r.tables[ch.Schema+"."+ch.Table]
	if !ok {
		return Message{}, false
	}
	row := ch.New
	if ch.Op == Delete {
		row = ch.Old
	}
	m.Pos = ch.Pos
	m.scope(ch, row, t)
	m.Type = t.MessageType()

	b := make([]byte, 0, 256+rowSize(row)+rowSize(ch.Old))
	b = append(b, `{"id":"`...)
	b = ch.Pos.Append(b)
	b = append(b, `","type":`...)
	b = jsonx.AppendString(b, m.Type)
	b = append(b, `,"action":`...)
	b = jsonx.AppendString(b, ch.Op.String())
	b = append(b, `,"table":`...)
	qualified := ch.Schema + "." + ch.Table
	b = jsonx.AppendString(b, qualified)
	ref := r.rowRef(qualified, ch, row)
	if ref != nil && ref.Key != "" {
		b = append(b, `,"key":`...)
		b = jsonx.AppendString(b, ref.Key)
		if ref.OldKey != "" {
			b = append(b, `,"old_key":`...)
			b = jsonx.AppendString(b, ref.OldKey)
		}
	}
	b = append(b, `,"data":`...)
	dataStart := len(b)
	b = appendData(b, t, ch.Op, row)
	dataEnd := len(b)
	b = appendChangeNotes(b, ch)
	b = append(b, `,"version":"`...)
	b = strconv.AppendUint(b, ch.Pos.LSN, 10)
	b = append(b, `","timestamp":"`...)
	if tx.commitTimeText == nil {
		tx.commitTimeText = tx.CommitTime.UTC().AppendFormat(nil, TimeFormat)
	}
	b = append(b, tx.commitTimeText...)
	b = append(b, `"}`...)
	m.JSON = b
	if ref != nil && ref.Op == RowUpsert {
		ref.Data = b[dataStart:dataEnd:dataEnd]
	}
	m.Row = ref
	r.noteLeft(&m, tx, ch, t, ref)
	return m, true
}

// noteLeft sets m.Left and m.LeftJSON when ch, an UPDATE whose old row is
// whole (REPLICA IDENTITY FULL), moved the row to another scope: the
// connections that saw it before and may not see it now are told it left
// (a "deleted" frame of the old row with "left":true).
func (r *Router) noteLeft(m *Message, tx *Tx, ch *Change, t *Table, ref *RowRef) {
	if ch.Op != Update || !ch.OldFull {
		return
	}
	var old Message
	old.scope(ch, ch.Old, t)
	if old.scopeOf() == m.scopeOf() {
		return
	}
	left := old.scopeOf()
	m.Left = &left
	b := make([]byte, 0, 192+rowSize(ch.Old))
	b = append(b, `{"id":"`...)
	b = ch.Pos.Append(b)
	b = append(b, `","type":`...)
	b = jsonx.AppendString(b, m.Type)
	b = append(b, `,"action":"deleted","table":`...)
	b = jsonx.AppendString(b, ch.Schema+"."+ch.Table)
	if ref != nil && ref.Key != "" {
		key := ref.Key
		if ref.OldKey != "" {
			key = ref.OldKey
		}
		b = append(b, `,"key":`...)
		b = jsonx.AppendString(b, key)
	}
	b = append(b, `,"data":`...)
	b = appendData(b, t, Delete, ch.Old)
	b = append(b, `,"left":true,"version":"`...)
	b = strconv.AppendUint(b, ch.Pos.LSN, 10)
	b = append(b, `","timestamp":"`...)
	b = append(b, tx.commitTimeText...)
	m.LeftJSON = append(b, `"}`...)
}

// rowRef returns what ch does to the live state of its table, whose
// routed row is row; nil when the table has no primary key, or the row
// lacks a key column (a publication's column list left it out).
func (r *Router) rowRef(table string, ch *Change, row Row) *RowRef {
	key := (*r.keys.Load())[table]
	if len(key) == 0 {
		return nil
	}
	ref := &RowRef{Table: table, Op: RowUpsert, Unchanged: ch.Unchanged, Oversized: ch.Oversized}
	switch ch.Op {
	case Truncate:
		ref.Op = RowClear
		return ref
	case Delete:
		ref.Op = RowDelete
	}
	var ok bool
	if ref.Key, ok = keyOf(row, key); !ok {
		return nil
	}
	// The old row carries the key columns when the key changed (a key
	// replica identity) or always (FULL): a different key means the row
	// moved, and its old key is gone.
	if ch.Op == Update {
		if old, ok := keyOf(ch.Old, key); ok && old != ref.Key {
			ref.OldKey = old
		}
	}
	return ref
}

// keyOf returns the canonical key of row: the JSON array of its key
// columns' values; false when row lacks one of them.
func keyOf(row Row, key []string) (string, bool) {
	b := make([]byte, 0, 16)
	b = append(b, '[')
	for i, col := range key {
		v, ok := row.Get(col)
		if !ok {
			return "", false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	return string(append(b, ']')), true
}

// scope sets who may receive the message of ch, whose routed row is row.
func (m *Message) scope(ch *Change, row Row, t *Table) {
	if ch.Unscoped {
		m.AdminOnly = true
		m.Unroutable = ch.UnscopedReason
		if m.Unroutable == "" {
			m.Unroutable = UnroutableMissingColumns
		}
	}
	// A routing value that is present but not an exact integer must not
	// read as "no scope", which would send the row to everyone: the
	// message goes to admins only and says why (fail closed). SQL NULL
	// keeps its meaning: no committee, or no owner.
	if v, ok := getCol(row, t.CommitteeCol()); ok {
		switch id, state := readID(v); state {
		case idValid:
			m.Committee, m.HasCommittee = id, true
		case idUnreadable:
			m.AdminOnly, m.Unroutable = true, UnroutableCommittee
		}
	}
	if v, ok := getCol(row, t.OwnerCol()); ok {
		switch id, state := readID(v); state {
		case idValid:
			m.Owner, m.HasOwner = id, true
		case idUnreadable:
			m.AdminOnly = true
			if m.Unroutable == "" {
				m.Unroutable = UnroutableOwner
			}
		}
	}
}

// getCol reads a routing column; a table without it ("") has no value.
func getCol(row Row, col string) ([]byte, bool) {
	if col == "" {
		return nil, false
	}
	return row.Get(col)
}

// messageType is the message type of a table kind's changes.
func messageType(kind Kind) string {
	switch kind {
	case KindGuarantee:
		return TypeGuarantee
	case KindAttendance:
		return TypeAttendance
	default:
		return TypeVoting
	}
}

// appendData appends the message's "data": the row, wrapped for vote
// counts and election results as the application's frames were.
func appendData(b []byte, t *Table, op Op, row Row) []byte {
	switch t.Kind {
	case KindVoteCount:
		b = append(b, `{"vote_count":`...)
		b = appendRow(b, row)
		b = append(b, `,"committee_id":`...)
		b = appendScalar(b, row, t.CommitteeCol())
		b = append(b, '}')
	case KindElectionResults:
		b = append(b, `{"election_results":`...)
		b = appendRow(b, row)
		b = append(b, `,"action_type":`...)
		if op == Insert {
			b = append(b, `"results_generated"`...)
		} else {
			b = append(b, `"results_updated"`...)
		}
		b = append(b, `,"committee_id":`...)
		b = appendScalar(b, row, t.CommitteeCol())
		b = append(b, '}')
	default:
		b = appendRow(b, row)
	}
	return b
}

// appendChangeNotes appends what else the change says: the old values of
// an update's changed columns, the unchanged TOASTed columns, and the
// columns left out of an oversized row.
func appendChangeNotes(b []byte, ch *Change) []byte {
	if ch.Op == Update && len(ch.Old) > 0 {
		b = append(b, `,"old":`...)
		b = appendChanged(b, ch.Old, ch.New)
	}
	if len(ch.Unchanged) > 0 {
		b = append(b, `,"unchanged":`...)
		b = jsonx.AppendStrings(b, ch.Unchanged)
	}
	if ch.Oversized {
		b = append(b, `,"oversized":true,"omitted":`...)
		b = jsonx.AppendStrings(b, ch.Omitted)
	}
	return b
}

// TimeFormat is how walcast writes timestamps: RFC 3339 in UTC with
// microseconds, PostgreSQL's own precision.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// CommitTime formats a commit time the way messages carry it.
func CommitTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

func rowSize(r Row) int {
	n := 2
	for i := range r {
		n += len(r[i].Name) + len(r[i].Value) + 4
	}
	return n
}

func appendRow(b []byte, r Row) []byte {
	b = append(b, '{')
	for i := range r {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, &r[i])
		b = append(b, r[i].Value...)
	}
	return append(b, '}')
}

// appendKey writes a column's name as an object key, colon included.
func appendKey(b []byte, c *Column) []byte {
	if len(c.Key) > 0 {
		return append(b, c.Key...)
	}
	b = jsonx.AppendString(b, c.Name)
	return append(b, ':')
}

// appendChanged writes the old values of the columns an update changed.
// Under REPLICA IDENTITY FULL old holds every column and only the differing
// ones are written; with a key identity old holds the key columns, present
// only because the key changed.
func appendChanged(b []byte, old, new Row) []byte {
	b = append(b, '{')
	n := 0
	for i := range old {
		// Both rows come from one relation in its column order, so the
		// column is usually at the same index; search only when it is not.
		var v []byte
		ok := false
		if i < len(new) && new[i].Name == old[i].Name {
			v, ok = new[i].Value, true
		} else {
			v, ok = new.Get(old[i].Name)
		}
		if ok && string(v) == string(old[i].Value) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendKey(b, &old[i])
		b = append(b, old[i].Value...)
	}
	return append(b, '}')
}

func appendScalar(b []byte, r Row, name string) []byte {
	if v, ok := getCol(r, name); ok {
		return append(b, v...)
	}
	return append(b, "null"...)
}

// Why a message went to admins only (Message.Unroutable): the reason
// label of walcast_unroutable_changes_total.
const (
	// UnroutableCommittee: committee_id is present but not an exact
	// 64-bit integer (a uuid, "3.00", a text code, a float, out of range).
	UnroutableCommittee = "unreadable_committee_id"
	// UnroutableOwner: user_id is present but not an exact 64-bit integer.
	UnroutableOwner = "unreadable_user_id"
	// UnroutableMissingColumns: the table has committee_id or user_id but
	// the change does not carry it: the publication's column list leaves
	// it out.
	UnroutableMissingColumns = "routing_columns_not_published"
	// UnroutableKeyOnlyDelete: a delete under a key-only replica identity
	// carries only the key, not committee_id or user_id.
	UnroutableKeyOnlyDelete = "delete_without_routing_columns"
)

// idState says what a routing column's value is.
type idState uint8

const (
	idNull       idState = iota // SQL NULL: no scope
	idValid                     // an exact 64-bit integer
	idUnreadable                // anything else: the message's scope is unknown
)

// readID reads a routing column's JSON: a bare integer (integer columns),
// or a string holding one (numeric and text columns). NULL is idNull;
// everything that is not exactly a 64-bit integer in canonical decimal is
// idUnreadable ("3.00", "03", " 3", "1e3", a uuid, 2^63).
func readID(v []byte) (int64, idState) {
	if string(v) == "null" {
		return 0, idNull
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	id, err := ParseID(string(v))
	if err != nil {
		return 0, idUnreadable
	}
	return id, idValid
}

// ParseID parses an id the way walcast reads every committee and user id:
// an exact 64-bit integer in canonical decimal, an optional minus sign and
// digits without leading zeros. Anything else ("+3", "03", "3.00", " 3",
// "1e3", a number out of int64 range) is an error, so that an id is never
// rounded, truncated or guessed.
func ParseID(s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || len(digits) > 19 {
		return 0, fmt.Errorf("id %q: not an integer", truncate(s, 32))
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("id %q: not an integer", truncate(s, 32))
		}
	}
	if digits[0] == '0' && (len(digits) > 1 || len(s) > 1) {
		return 0, fmt.Errorf("id %q: not in canonical form", truncate(s, 32))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("id %q: out of the 64-bit range", truncate(s, 32))
	}
	return n, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
