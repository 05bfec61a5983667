package cdc

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/schema"
)

// snapReader reads the tracked tables under a snapshot into insert
// changes, through a Decoder: a relation described from the catalog as
// pgoutput would describe it, and each row's text values converted by the
// decoder's own code, so that a row read here and the same row read from
// the WAL make the same message.
type snapReader struct {
	dec    *Decoder
	tables []snapTable
}

// snapTable is one tracked table with a primary key, and the statement
// that reads its published columns.
type snapTable struct {
	rel   *relation
	query string
}

// names returns the qualified names of the tables the reader reads.
func (r *snapReader) names() []string {
	out := make([]string, len(r.tables))
	for i, t := range r.tables {
		out[i] = t.rel.schema + "." + t.rel.name
	}
	return out
}

// snapColumn is one published column as the catalog describes it.
type snapColumn struct {
	name  string
	oid   uint32
	ident bool // part of the replica identity: pgoutput's key flag
	pkey  bool // part of the primary key
}

// describe builds the reader for the tracked tables, on the snapshot's
// connection (inside its transaction, so the catalog is the snapshot's).
// A table without a primary key has no live state: it is left out.
func (c *Capture) describe(ctx context.Context, conn *pgx.Conn, tracked map[uint32]trackedRel) (*snapReader, error) {
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	r := &snapReader{dec: NewDecoder()}
	r.dec.MaxRowBytes = c.cfg.MaxRowBytes
	r.dec.tracked = tracked
	ids := make([]uint32, 0, len(tracked))
	for id := range tracked {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uint32) int {
		return strings.Compare(tracked[a].table.Qualified(), tracked[b].table.Qualified())
	})
	for _, id := range ids {
		tr := tracked[id]
		cols, identity, partitioned, err := c.snapColumns(ctx, conn, id, version)
		if err != nil {
			return nil, fmt.Errorf("describe %s for the snapshot: %w", tr.table.Qualified(), err)
		}
		if !slices.ContainsFunc(cols, func(c snapColumn) bool { return c.pkey }) {
			continue // no live state: the start-up check warned (noKeyFinding)
		}
		if err := r.dec.loadUserTypes(ctx, conn, cols); err != nil {
			return nil, err
		}
		rel := &relation{id: id, schema: tr.table.Schema, name: tr.table.Name, identity: identity,
			cols: make([]relCol, len(cols)), colByName: make(map[string]int, len(cols))}
		names := make([]string, len(cols))
		for i, col := range cols {
			var flags byte
			if col.ident {
				flags = 1
			}
			rel.cols[i] = r.dec.column(flags, col.name, col.oid)
			rel.colByName[col.name] = i
			names[i] = schema.QuoteIdent(col.name)
		}
		r.dec.addRelation(rel)
		only := "ONLY "
		if partitioned {
			only = "" // its rows are its partitions'
		}
		r.tables = append(r.tables, snapTable{rel: rel,
			query: "SELECT " + strings.Join(names, ", ") + " FROM " + only + tr.quoted})
	}
	return r, nil
}

// snapColumns reads the columns pgoutput publishes of a table (PostgreSQL
// 15's column lists included; generated columns are not published), with
// pgoutput's key flag and the primary key, and the table's replica
// identity.
func (c *Capture) snapColumns(ctx context.Context, conn *pgx.Conn, id uint32, version int) (cols []snapColumn, identity byte, partitioned bool, err error) {
	listed := ""
	if version >= 150000 {
		listed = `AND NOT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
			WHERE p.pubname = $2 AND r.prrelid = c.oid AND r.prattrs IS NOT NULL AND NOT a.attnum = ANY(r.prattrs::int2[]))`
	}
	rows, err := conn.Query(ctx, `SELECT a.attname::text, a.atttypid::int8, c.relreplident::text, c.relkind = 'p',
			c.relreplident = 'f' OR COALESCE(a.attnum = ANY(i.indkey::int2[]), false),
			COALESCE(a.attnum = ANY(pk.indkey::int2[]), false)
		FROM pg_class c
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
		LEFT JOIN pg_index i ON i.indrelid = c.oid
			AND (c.relreplident = 'd' AND i.indisprimary OR c.relreplident = 'i' AND i.indisreplident)
		WHERE c.oid = $1 `+listed+` ORDER BY a.attnum`, id, c.cfg.Publication)
	if err != nil {
		return nil, 0, false, err
	}
	var col snapColumn
	var oid int64
	var ident string
	_, err = pgx.ForEachRow(rows, []any{&col.name, &oid, &ident, &partitioned, &col.ident, &col.pkey}, func() error {
		col.oid = uint32(oid)
		cols = append(cols, col)
		return nil
	})
	if err != nil {
		return nil, 0, false, err
	}
	if ident != "" {
		identity = ident[0]
	}
	return cols, identity, partitioned, nil
}

// firstUserOID is PostgreSQL's FirstNormalObjectId: types below it are
// built in, and pgx knows them.
const firstUserOID = 16384

// loadUserTypes tells the decoder the names of the user types among cols,
// as pgoutput's Type messages would.
func (d *Decoder) loadUserTypes(ctx context.Context, conn *pgx.Conn, cols []snapColumn) error {
	var oids []int64
	for _, c := range cols {
		if _, known := d.userTypes[c.oid]; !known && c.oid >= firstUserOID {
			oids = append(oids, int64(c.oid))
		}
	}
	if len(oids) == 0 {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT t.oid::int8, n.nspname::text, t.typname::text
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY($1)`, oids)
	if err != nil {
		return fmt.Errorf("read the tracked tables' types: %w", err)
	}
	var oid int64
	var ti typeInfo
	_, err = pgx.ForEachRow(rows, []any{&oid, &ti.namespace, &ti.name}, func() error {
		d.userTypes[uint32(oid)] = ti
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the tracked tables' types: %w", err)
	}
	return nil
}

// read reads every table's rows, as insert changes at position at, in
// batches to fn. fn owns each batch.
func (r *snapReader) read(ctx context.Context, conn *pgx.Conn, at schema.Position, fn func([]schema.Change) error) error {
	for _, t := range r.tables {
		if err := r.readTable(ctx, conn, t, at, fn); err != nil {
			return fmt.Errorf("read %s.%s under the snapshot: %w", t.rel.schema, t.rel.name, err)
		}
	}
	return nil
}

// readTable reads one table's rows in text form and converts each as the
// decoder converts an insert from the WAL.
func (r *snapReader) readTable(ctx context.Context, conn *pgx.Conn, t snapTable, at schema.Position, fn func([]schema.Change) error) error {
	rr := conn.PgConn().ExecParams(ctx, t.query, nil, nil, nil, nil)
	batch := make([]schema.Change, 0, snapshotBatch)
	size := 0
	d := r.dec
	for rr.NextRow() {
		vals := rr.Values()
		d.newCols, d.oldCols = d.newCols[:0], d.oldCols[:0]
		for _, v := range vals {
			if v == nil {
				d.newCols = append(d.newCols, tupleCol{kind: colNull})
			} else {
				d.newCols = append(d.newCols, tupleCol{kind: colText, data: v})
			}
			size += len(v)
		}
		ch := schema.Change{Op: schema.Insert, Pos: at}
		d.finish(&ch, t.rel, 0)
		batch = append(batch, ch)
		if len(batch) >= snapshotBatch || size >= snapshotBatchBytes {
			if err := fn(batch); err != nil {
				rr.Close()
				return err
			}
			batch, size = make([]schema.Change, 0, snapshotBatch), 0
		}
	}
	if _, err := rr.Close(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}
