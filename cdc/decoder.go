package cdc

import (
	"fmt"
	"slices"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/schema"
)

// pgoutput message types (protocol version 1).
const (
	msgBegin    = 'B'
	msgCommit   = 'C'
	msgOrigin   = 'O'
	msgRelation = 'R'
	msgType     = 'Y'
	msgInsert   = 'I'
	msgUpdate   = 'U'
	msgDelete   = 'D'
	msgTruncate = 'T'
	msgMessage  = 'M'
)

// DefaultMaxRowBytes is the largest row, as PostgreSQL's text output of its
// columns, that is sent whole. Larger rows are sent as their key and
// routing columns with "oversized": true, so a 50 MB row never becomes a
// 50 MB WebSocket frame and the client still learns to refetch it.
const DefaultMaxRowBytes = 1 << 20

// DefaultBatchChanges bounds how many changes of one transaction the
// decoder holds before handing them on, so a million-row UPDATE streams
// through in pieces instead of being held in memory whole.
const DefaultBatchChanges = 4096

// relation is a cached Relation message with a conversion per column.
type relation struct {
	id       uint32
	schema   string
	name     string
	identity byte // 'd' default, 'f' full, 'i' index, 'n' nothing
	cols     []relCol
	keepBig  []bool // columns kept when the row is oversized
	// drop marks the columns the table's configuration keeps inside
	// walcast (exclude/include); nil when every column leaves.
	drop      []bool
	keep      []bool   // !drop, made by dropKeep
	routing   []string // the table's routing columns it has
	colByName map[string]int
	// unscoped is set when the relation as published lacks a routing
	// column its table has (a publication column list): every change of
	// it goes to admins only.
	unscoped bool
}

type relCol struct {
	name  string
	jkey  []byte // name as a JSON object key with its colon
	oid   uint32
	key   bool
	conv  conv
	flags byte
}

// Decoder turns pgoutput messages into transactions. It holds the
// relation cache and the transaction being read; it does no I/O.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	// MaxRowBytes and BatchChanges default to DefaultMaxRowBytes and
	// DefaultBatchChanges when zero.
	MaxRowBytes  int
	BatchChanges int

	types     *pgtype.Map
	userTypes map[uint32]typeInfo
	relations map[uint32]*relation
	// tracked are the tracked tables by relation id, as resolved at the
	// session's start (nil in tests of the decoder alone: then tables are
	// known by name only). A tracked relation keeps its configured name
	// whatever PostgreSQL now calls it: publications follow a renamed
	// table, and so does walcast.
	tracked map[uint32]trackedRel
	// onRenamed is told when a tracked relation arrives under another
	// name than the configured one.
	onRenamed func(rel uint32, configured schema.Table, now string)
	tx        *schema.Tx // transaction being read; nil between transactions
	seq       uint64     // ordinal of the next change in tx
	newCols   []tupleCol
	oldCols   []tupleCol

	// Values and rows are carved out of shared chunks rather than
	// allocated per change: a chunk is freed once every piece holding a
	// part of it is stored and dropped.
	bytesArena []byte
	colsArena  []schema.Column
}

const (
	bytesChunk = 64 << 10
	colsChunk  = 1024
)

// valueBuf returns an empty slice with room for n bytes, from the arena.
func (d *Decoder) valueBuf(n int) []byte {
	if n > bytesChunk/4 {
		return make([]byte, 0, n) // large values get their own allocation
	}
	if cap(d.bytesArena)-len(d.bytesArena) < n {
		d.bytesArena = make([]byte, 0, bytesChunk)
	}
	return d.bytesArena[len(d.bytesArena):len(d.bytesArena)]
}

// commitValues marks b, returned by valueBuf and appended to, as used.
// When appending outgrew the arena, b moved; values written before the move
// still point into the arena, so the arena is abandoned rather than reused.
func (d *Decoder) commitValues(b []byte) {
	if cap(b) == 0 {
		return
	}
	free := d.bytesArena[len(d.bytesArena):cap(d.bytesArena)]
	if len(free) > 0 && &b[:1][0] == &free[:1][0] {
		d.bytesArena = d.bytesArena[:len(d.bytesArena)+len(b)]
		return
	}
	d.bytesArena = nil
}

// row returns an empty row with room for n columns, from the arena.
func (d *Decoder) row(n int) schema.Row {
	if n > colsChunk/4 {
		return make(schema.Row, 0, n)
	}
	if cap(d.colsArena)-len(d.colsArena) < n {
		d.colsArena = make([]schema.Column, 0, colsChunk)
	}
	r := d.colsArena[len(d.colsArena) : len(d.colsArena) : len(d.colsArena)+n]
	d.colsArena = d.colsArena[:len(d.colsArena)+n]
	return r
}

// NewDecoder returns a Decoder with an empty relation cache.
func NewDecoder() *Decoder {
	return &Decoder{
		types:     pgtype.NewMap(),
		userTypes: map[uint32]typeInfo{},
		relations: map[uint32]*relation{},
	}
}

// InTx reports whether the decoder is inside a transaction: between a
// Begin and its Commit. Positions received meanwhile must not be confirmed.
func (d *Decoder) InTx() bool { return d.tx != nil }

// Decode consumes one pgoutput message.
//
// It returns a transaction piece when it has one to hand on: on Commit
// (the piece with Commit set), or in the middle of a large transaction once
// BatchChanges changes have accumulated (Commit false; the rest follows).
// A transaction with no changes of tracked tables returns a piece with no
// changes, which the caller may still confirm.
func (d *Decoder) Decode(msg []byte) (*Piece, error) {
	if len(msg) == 0 {
		return nil, fmt.Errorf("decode pgoutput: empty message")
	}
	r := &reader{b: msg[1:]}
	switch msg[0] {
	case msgBegin:
		return nil, d.begin(r)
	case msgCommit:
		return d.commit(r)
	case msgRelation:
		return nil, d.relation(r)
	case msgType:
		return nil, d.typ(r)
	case msgInsert, msgUpdate, msgDelete:
		return d.change(msg[0], r)
	case msgTruncate:
		return d.truncate(r)
	case msgOrigin, msgMessage:
		// Replication origins and logical messages carry no row changes.
		return nil, nil
	}
	return nil, fmt.Errorf("decode pgoutput: unknown message type %q", msg[0])
}

// Piece is part or all of one committed transaction.
type Piece struct {
	schema.Tx
	// Commit is set on the transaction's last piece: once it is stored,
	// the slot may be confirmed up to Tx.EndLSN.
	Commit bool
}

func (d *Decoder) begin(r *reader) error {
	final := r.uint64("begin final lsn")
	at := r.time("begin commit time")
	xid := r.uint32("begin xid")
	if r.err != nil {
		return fmt.Errorf("decode begin: %w", r.err)
	}
	if d.tx != nil {
		return fmt.Errorf("decode begin of xid %d: transaction %d still open", xid, d.tx.Xid)
	}
	d.tx = &schema.Tx{CommitLSN: final, CommitTime: at, Xid: xid}
	d.seq = 0
	return nil
}

func (d *Decoder) commit(r *reader) (*Piece, error) {
	r.byte("commit flags")
	lsn := r.uint64("commit lsn")
	end := r.uint64("commit end lsn")
	at := r.time("commit time")
	if r.err != nil {
		return nil, fmt.Errorf("decode commit: %w", r.err)
	}
	if d.tx == nil {
		return nil, fmt.Errorf("decode commit at %s: no transaction open", pglogrepl.LSN(lsn))
	}
	if lsn != d.tx.CommitLSN {
		return nil, fmt.Errorf("decode commit at %s: begin announced %s", pglogrepl.LSN(lsn), pglogrepl.LSN(d.tx.CommitLSN))
	}
	tx := d.tx
	tx.EndLSN = end
	tx.CommitTime = at
	d.tx = nil
	return &Piece{Tx: *tx, Commit: true}, nil
}

func (d *Decoder) typ(r *reader) error {
	oid := r.uint32("type oid")
	ns := r.cstring("type namespace")
	name := r.cstring("type name")
	if r.err != nil {
		return fmt.Errorf("decode type: %w", r.err)
	}
	d.userTypes[oid] = typeInfo{namespace: ns, name: name}
	return nil
}

func (d *Decoder) relation(r *reader) error {
	rel := &relation{id: r.uint32("relation id")}
	rel.schema = r.cstring("relation namespace")
	rel.name = r.cstring("relation name")
	rel.identity = r.byte("relation replica identity")
	n := int(r.uint16("relation column count"))
	if r.err == nil && n > len(r.b) {
		return fmt.Errorf("decode relation %s.%s: %d columns in %d bytes: %w", rel.schema, rel.name, n, len(r.b), errShort)
	}
	rel.cols = make([]relCol, 0, n)
	rel.colByName = make(map[string]int, n)
	for i := 0; i < n && r.err == nil; i++ {
		flags := r.byte("column flags")
		name := r.cstring("column name")
		oid := r.uint32("column type")
		r.uint32("column type modifier")
		c := d.column(flags, name, oid)
		rel.colByName[c.name] = i
		rel.cols = append(rel.cols, c)
	}
	if r.err != nil {
		return fmt.Errorf("decode relation: %w", r.err)
	}
	d.addRelation(rel)
	return nil
}

// column describes one column of a relation, with the conversion of its
// values by type OID.
func (d *Decoder) column(flags byte, name string, oid uint32) relCol {
	return relCol{flags: flags, name: name, oid: oid, key: flags&1 != 0,
		jkey: append(jsonx.AppendString(nil, name), ':'), conv: convFor(d.types, oid, d.userTypes)}
}

// addRelation completes a relation whose columns are known (from a Relation
// message, or from the catalog for a snapshot) with what the tracked
// table's configuration says, and caches it.
func (d *Decoder) addRelation(rel *relation) {
	var pkey []string // kept in an oversized row: the live state needs the key
	if t, ok := d.tracked[rel.id]; ok {
		pkey = t.key
		if rel.schema != t.table.Schema || rel.name != t.table.Name {
			if d.onRenamed != nil {
				d.onRenamed(rel.id, t.table, rel.schema+"."+rel.name)
			}
			rel.schema, rel.name = t.table.Schema, t.table.Name
		}
		for _, name := range t.routing {
			if _, published := rel.colByName[name]; !published {
				rel.unscoped = true
			}
		}
		rel.routing = t.routing
		if t.table.Columns != nil {
			rel.drop = make([]bool, len(rel.cols))
			for i, c := range rel.cols {
				rel.drop[i] = !t.table.Leaves(c.name)
			}
		}
	} else {
		// Known by name only (tests, or before the session resolved it):
		// walcast's own routing columns.
		for _, name := range []string{schema.CommitteeColumn, schema.OwnerColumn} {
			if _, has := rel.colByName[name]; has {
				rel.routing = append(rel.routing, name)
			}
		}
	}
	rel.keepBig = make([]bool, len(rel.cols))
	for i, c := range rel.cols {
		// Under REPLICA IDENTITY FULL every column is flagged as key, so
		// only the routing columns identify the row.
		rel.keepBig[i] = c.key && rel.identity != 'f' || c.name == "id" || slices.Contains(rel.routing, c.name) || slices.Contains(pkey, c.name)
		if rel.drop != nil && rel.drop[i] {
			rel.keepBig[i] = false
		}
	}
	d.relations[rel.id] = rel
}

// dropKeep returns which columns leave walcast: those not dropped.
func (rel *relation) dropKeep() []bool {
	if rel.keep == nil {
		rel.keep = make([]bool, len(rel.drop))
		for i, d := range rel.drop {
			rel.keep[i] = !d
		}
	}
	return rel.keep
}

func (d *Decoder) change(kind byte, r *reader) (*Piece, error) {
	if d.tx == nil {
		return nil, fmt.Errorf("decode %s: outside a transaction", opName(kind))
	}
	relID := r.uint32("relation id")
	rel, ok := d.relations[relID]
	if r.err == nil && !ok {
		return nil, fmt.Errorf("decode %s: unknown relation %d (no Relation message before it)", opName(kind), relID)
	}
	ch := schema.Change{Pos: schema.Position{LSN: d.tx.CommitLSN, Seq: d.seq}}
	var oldKind byte
	d.oldCols, d.newCols = d.oldCols[:0], d.newCols[:0]
	switch kind {
	case msgInsert:
		ch.Op = schema.Insert
		if t := r.byte("insert tuple kind"); r.err == nil && t != 'N' {
			return nil, fmt.Errorf("decode insert into %s.%s: tuple kind %q, want 'N'", rel.schema, rel.name, t)
		}
		d.newCols = r.tuple(d.newCols)
	case msgUpdate:
		ch.Op = schema.Update
		t := r.byte("update tuple kind")
		if t == 'K' || t == 'O' {
			oldKind = t
			d.oldCols = r.tuple(d.oldCols)
			t = r.byte("update new tuple kind")
		}
		if r.err == nil && t != 'N' {
			return nil, fmt.Errorf("decode update of %s.%s: tuple kind %q, want 'N'", rel.schema, rel.name, t)
		}
		d.newCols = r.tuple(d.newCols)
	case msgDelete:
		ch.Op = schema.Delete
		oldKind = r.byte("delete tuple kind")
		if r.err == nil && oldKind != 'K' && oldKind != 'O' {
			return nil, fmt.Errorf("decode delete from %s.%s: tuple kind %q, want 'K' or 'O'", rel.schema, rel.name, oldKind)
		}
		d.oldCols = r.tuple(d.oldCols)
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode %s: %w", opName(kind), r.err)
	}
	if len(d.newCols) > len(rel.cols) || len(d.oldCols) > len(rel.cols) {
		return nil, fmt.Errorf("decode %s of %s.%s: tuple has more columns than the relation's %d", opName(kind), rel.schema, rel.name, len(rel.cols))
	}
	d.finish(&ch, rel, oldKind)
	d.seq++
	d.tx.Changes = append(d.tx.Changes, ch)
	return d.maybeSplit(), nil
}

// finish turns the tuples just read (d.newCols, d.oldCols) into ch's rows
// and scope: the one conversion of column values, shared by the stream
// and the snapshot that seeds the live state.
func (d *Decoder) finish(ch *schema.Change, rel *relation, oldKind byte) {
	ch.Schema, ch.Table = rel.schema, rel.name
	d.fill(ch, rel, oldKind)
	if rel.unscoped {
		ch.Unscoped, ch.UnscopedReason = true, schema.UnroutableMissingColumns
	} else if ch.Op == schema.Delete && !ch.OldFull {
		for _, name := range rel.routing {
			if _, has := rel.colByName[name]; has {
				if _, sent := ch.Old.Get(name); !sent {
					ch.Unscoped, ch.UnscopedReason = true, schema.UnroutableKeyOnlyDelete
				}
			}
		}
	}
}

// fill converts the tuples just read into ch's rows.
func (d *Decoder) fill(ch *schema.Change, rel *relation, oldKind byte) {
	max := d.MaxRowBytes
	if max <= 0 {
		max = DefaultMaxRowBytes
	}
	big := tupleSize(d.newCols) > max || tupleSize(d.oldCols) > max
	var keep []bool
	if big {
		keep = rel.keepBig
		ch.Oversized = true
		for i, c := range rel.cols {
			if !keep[i] && (rel.drop == nil || !rel.drop[i]) {
				ch.Omitted = append(ch.Omitted, c.name)
			}
		}
	} else if rel.drop != nil {
		// An excluded column is skipped like one an oversized row omits,
		// but is never listed: its name stays inside walcast too.
		keep = rel.dropKeep()
	}
	// One buffer holds every value of the change; the rows view it.
	buf := d.valueBuf(tupleSize(d.newCols) + tupleSize(d.oldCols) + 16*(len(d.newCols)+len(d.oldCols)))
	defer func() { d.commitValues(buf) }()
	if len(d.oldCols) > 0 {
		ch.OldFull = oldKind == 'O'
		ch.Old = d.row(len(d.oldCols))
		for i, c := range d.oldCols {
			if keep != nil && !keep[i] {
				continue
			}
			if oldKind == 'K' && !rel.cols[i].key {
				continue // a key tuple sends the other columns as nulls
			}
			if c.kind == colUnchanged {
				continue
			}
			start := len(buf)
			buf = appendValue(buf, rel.cols[i].conv, c)
			ch.Old = append(ch.Old, schema.Column{Name: rel.cols[i].name, Key: rel.cols[i].jkey, Value: buf[start:len(buf):len(buf)]})
		}
	}
	if len(d.newCols) > 0 {
		ch.New = d.row(len(d.newCols))
		for i, c := range d.newCols {
			if keep != nil && !keep[i] {
				continue
			}
			name := rel.cols[i].name
			if c.kind == colUnchanged {
				// REPLICA IDENTITY FULL carries the old value, which is the
				// current one: the column did not change.
				if v, ok := ch.Old.Get(name); ok && ch.OldFull {
					ch.New = append(ch.New, schema.Column{Name: name, Key: rel.cols[i].jkey, Value: v})
				} else {
					ch.Unchanged = append(ch.Unchanged, name)
				}
				continue
			}
			start := len(buf)
			buf = appendValue(buf, rel.cols[i].conv, c)
			ch.New = append(ch.New, schema.Column{Name: name, Key: rel.cols[i].jkey, Value: buf[start:len(buf):len(buf)]})
		}
	}
}

func appendValue(dst []byte, cv conv, c tupleCol) []byte {
	switch c.kind {
	case colText:
		return cv(dst, c.data)
	case colBinary:
		// walcast asks for text; a binary value is passed on opaque.
		return convBytea(dst, append([]byte(`\x`), hexString(c.data)...))
	}
	return append(dst, "null"...)
}

func hexString(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return out
}

func tupleSize(cols []tupleCol) int {
	n := 0
	for _, c := range cols {
		n += len(c.data)
	}
	return n
}

func (d *Decoder) truncate(r *reader) (*Piece, error) {
	if d.tx == nil {
		return nil, fmt.Errorf("decode truncate: outside a transaction")
	}
	n := r.uint32("truncate relation count")
	r.byte("truncate options")
	if r.err == nil && uint64(n)*4 > uint64(len(r.b)) {
		return nil, fmt.Errorf("decode truncate: %d relations in %d bytes: %w", n, len(r.b), errShort)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		id := r.uint32("truncate relation id")
		rel, ok := d.relations[id]
		if !ok {
			return nil, fmt.Errorf("decode truncate: unknown relation %d", id)
		}
		d.tx.Changes = append(d.tx.Changes, schema.Change{
			Schema: rel.schema, Table: rel.name, Op: schema.Truncate,
			Pos: schema.Position{LSN: d.tx.CommitLSN, Seq: d.seq},
		})
		d.seq++
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode truncate: %w", r.err)
	}
	return d.maybeSplit(), nil
}

// maybeSplit hands on the changes held so far when there are enough of them.
func (d *Decoder) maybeSplit() *Piece {
	limit := d.BatchChanges
	if limit <= 0 {
		limit = DefaultBatchChanges
	}
	if len(d.tx.Changes) < limit {
		return nil
	}
	p := &Piece{Tx: *d.tx}
	d.tx.Changes = nil
	return p
}

func opName(kind byte) string {
	switch kind {
	case msgInsert:
		return "insert"
	case msgUpdate:
		return "update"
	case msgDelete:
		return "delete"
	}
	return string(kind)
}
