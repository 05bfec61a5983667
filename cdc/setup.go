package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/schema"
)

// SetupError is a problem with the database's setup that retrying will not
// fix: walcast stops and says what to change.
type SetupError struct {
	Problem string // what is wrong, e.g. "wal_level is replica"
	Fix     string // the exact SQL or configuration line that fixes it
}

func (e *SetupError) Error() string {
	return e.Problem + "; fix: " + e.Fix
}

// IsSetupError reports whether err is (or wraps) a SetupError.
func IsSetupError(err error) bool {
	var se *SetupError
	return errors.As(err, &se)
}

// slotInfo is a replication slot's row in pg_replication_slots.
type slotInfo struct {
	exists    bool
	plugin    string
	database  string
	activePID int32
	confirmed uint64
	walStatus string
}

// querySlot reads the slot's row; exists is false when there is none.
func querySlot(ctx context.Context, conn *pgx.Conn, slot string) (slotInfo, error) {
	var s slotInfo
	var pid *int32
	var plugin, db, walStatus *string
	var confirmed *string
	err := conn.QueryRow(ctx, `SELECT plugin, database, active_pid, confirmed_flush_lsn::text, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &db, &pid, &confirmed, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read slot %s: %w", slot, err)
	}
	s.exists = true
	if plugin != nil {
		s.plugin = *plugin
	}
	if db != nil {
		s.database = *db
	}
	if pid != nil {
		s.activePID = *pid
	}
	if walStatus != nil {
		s.walStatus = *walStatus
	}
	if confirmed != nil {
		s.confirmed, err = parseLSN(*confirmed)
		if err != nil {
			return s, fmt.Errorf("read slot %s: %w", slot, err)
		}
	}
	return s, nil
}

// parseLSN parses PostgreSQL's "16/B374D848" form.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse lsn %q: no slash", s)
	}
	var h, l uint32
	if _, err := fmt.Sscanf(hi+" "+lo, "%X %X", &h, &l); err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	return uint64(h)<<32 | uint64(l), nil
}

// trackedRel is a tracked table as resolved at a session's start: the
// table walcast follows by its relation id, and the routing columns it has.
type trackedRel struct {
	table   schema.Table
	quoted  string   // its name now, quoted for SQL (differs from table's once renamed)
	routing []string // of committee_id and user_id, those the table has
}

// prepare checks what replication needs and creates the publication when
// it is missing. It resolves the tracked tables to their relation ids, by
// which the session follows them (a renamed table keeps its id). prev is
// the previous session's result in this process, nil at start: a table
// renamed while walcast runs is still found by its id when the session
// reconnects, whereas at start the configured name must exist. It returns
// SetupErrors for what it cannot fix.
func prepare(ctx context.Context, conn *pgx.Conn, publication string, tables []schema.Table, prev map[uint32]trackedRel) (map[uint32]trackedRel, error) {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return nil, fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return nil, &SetupError{
			Problem: fmt.Sprintf("wal_level is %s, logical replication needs logical", walLevel),
			Fix:     "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (a reload is not enough)",
		}
	}
	var canReplicate bool
	var role string
	if err := conn.QueryRow(ctx, `SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&role, &canReplicate); err != nil {
		return nil, fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return nil, &SetupError{
			Problem: fmt.Sprintf("role %s has no REPLICATION attribute", role),
			Fix:     fmt.Sprintf("ALTER ROLE %s WITH REPLICATION;", schema.QuoteIdent(role)),
		}
	}
	rels := make(map[uint32]trackedRel, len(tables))
	oids := make([]uint32, 0, len(tables)) // in --tables order
	const lookup = `SELECT c.oid, format('%I.%I', n.nspname, c.relname), ARRAY(SELECT a.attname::text FROM pg_attribute a
			WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2) ORDER BY a.attnum)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = `
	routingCols := []string{schema.CommitteeColumn, schema.OwnerColumn}
	for _, t := range tables {
		var oid uint32
		tr := trackedRel{table: t}
		err := conn.QueryRow(ctx, lookup+"to_regclass($1)", t.QuotedIdent(), routingCols).Scan(&oid, &tr.quoted, &tr.routing)
		if errors.Is(err, pgx.ErrNoRows) {
			// Renamed while this process runs: follow it by its id.
			for id, p := range prev {
				if p.table == t {
					err = conn.QueryRow(ctx, lookup+"$1::oid", id, routingCols).Scan(&oid, &tr.quoted, &tr.routing)
				}
			}
		}
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, missingTable(ctx, conn, publication, tables, t)
		}
		if err != nil {
			return nil, fmt.Errorf("look up table %s: %w", t.Qualified(), err)
		}
		rels[oid] = tr
		oids = append(oids, oid)
	}
	if err := ensurePublication(ctx, conn, publication, rels, oids); err != nil {
		return nil, err
	}
	if err := checkPublishedColumns(ctx, conn, publication, rels); err != nil {
		return nil, err
	}
	return rels, nil
}

// missingTable is the SetupError for a tracked table that does not exist.
// When the publication holds tables that --tables does not name, the
// missing one was most likely renamed or moved to another schema
// (publications follow a table, not its name): the fix says so.
func missingTable(ctx context.Context, conn *pgx.Conn, publication string, tables []schema.Table, t schema.Table) error {
	se := &SetupError{
		Problem: fmt.Sprintf("tracked table %s does not exist", t.Qualified()),
		Fix:     fmt.Sprintf("create it (walcast's election schema is schema/election.sql), or map an existing table with --tables name=%s", t.Kind),
	}
	if others := unnamedPublished(ctx, conn, publication, tables); len(others) > 0 {
		se.Problem += fmt.Sprintf(", and publication %s publishes %s, which --tables does not name", publication, strings.Join(others, ", "))
		se.Fix = renamedFix(t, others[0]) + "; otherwise " + se.Fix
	}
	return se
}

// renamedFix is the fix for a tracked table that may have been renamed to
// now.
func renamedFix(t schema.Table, now string) string {
	return fmt.Sprintf("if %s was renamed or moved to another schema (e.g. a Django RenameModel), track it under its new name: --tables %s=%s (with the other tables)",
		t.Qualified(), now, t.Kind)
}

// unnamedPublished returns the tables the publication lists by name that
// --tables does not name, as --tables takes them (schema.name, unquoted).
// It is a hint, so a failed query returns nothing.
func unnamedPublished(ctx context.Context, conn *pgx.Conn, publication string, tables []schema.Table) []string {
	rows, err := conn.Query(ctx, `SELECT p.schemaname, p.tablename
		FROM pg_publication_tables p JOIN pg_publication pub ON pub.pubname = p.pubname
		WHERE p.pubname = $1 AND NOT pub.puballtables ORDER BY 1, 2`, publication)
	if err != nil {
		return nil
	}
	configured := map[string]bool{}
	for _, c := range tables {
		configured[c.Qualified()] = true
	}
	var others []string
	var s, n string
	if _, err := pgx.ForEachRow(rows, []any{&s, &n}, func() error {
		if !configured[s+"."+n] {
			others = append(others, s+"."+n)
		}
		return nil
	}); err != nil {
		return nil
	}
	return others
}

// ensurePublication creates the publication when it is missing, and
// otherwise checks that it publishes every tracked table, by relation id
// so that a renamed table still counts.
func ensurePublication(ctx context.Context, conn *pgx.Conn, publication string, rels map[uint32]trackedRel, oids []uint32) error {
	var exists, allTables bool
	err := conn.QueryRow(ctx, "SELECT true, puballtables FROM pg_publication WHERE pubname = $1", publication).Scan(&exists, &allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		list := make([]string, len(oids))
		for i, oid := range oids {
			list[i] = rels[oid].quoted
		}
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", schema.QuoteIdent(publication), strings.Join(list, ", "))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return &SetupError{
				Problem: fmt.Sprintf("cannot create publication %s: %v", publication, err),
				Fix:     sql + "; (run it as the tables' owner or a superuser)",
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read publication %s: %w", publication, err)
	}
	if allTables {
		return nil
	}
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename)::regclass::oid FROM pg_publication_tables WHERE pubname = $1`, publication)
	if err != nil {
		return fmt.Errorf("read tables of publication %s: %w", publication, err)
	}
	published := map[uint32]bool{}
	var oid uint32
	if _, err := pgx.ForEachRow(rows, []any{&oid}, func() error {
		published[oid] = true
		return nil
	}); err != nil {
		return fmt.Errorf("read tables of publication %s: %w", publication, err)
	}
	for _, oid := range oids {
		if !published[oid] {
			t := rels[oid]
			return &SetupError{
				Problem: fmt.Sprintf("publication %s does not include tracked table %s", publication, t.table.Qualified()),
				Fix:     fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", schema.QuoteIdent(publication), t.quoted),
			}
		}
	}
	return nil
}

// checkPublishedColumns refuses a publication that publishes a tracked
// table with a row filter, or with a column list that leaves out a routing
// column the table has (PostgreSQL 15 and later). Without committee_id or
// user_id walcast could not tell who may see a row; with a row filter it
// would miss changes without knowing.
func checkPublishedColumns(ctx context.Context, conn *pgx.Conn, publication string, rels map[uint32]trackedRel) error {
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	if version < 150000 {
		return nil // no column lists or row filters before 15
	}
	oids := make([]uint32, 0, len(rels))
	for oid := range rels {
		oids = append(oids, oid)
	}
	rows, err := conn.Query(ctx, `SELECT r.prrelid, format('%I.%I', n.nspname, c.relname), r.prqual IS NOT NULL,
			ARRAY(SELECT a.attname::text FROM pg_attribute a
				WHERE a.attrelid = r.prrelid AND a.attname = ANY($3) AND a.attnum > 0 AND NOT a.attisdropped
				AND r.prattrs IS NOT NULL AND NOT a.attnum = ANY(r.prattrs::int2[]) ORDER BY a.attnum)
		FROM pg_publication_rel r
		JOIN pg_publication p ON p.oid = r.prpubid
		JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1 AND r.prrelid = ANY($2::oid[])
		ORDER BY 2`, publication, oids, []string{schema.CommitteeColumn, schema.OwnerColumn})
	if err != nil {
		return fmt.Errorf("read the column lists of publication %s: %w", publication, err)
	}
	var (
		oid      uint32
		quoted   string
		filtered bool
		left     []string
		problems []string
		tables   []string
	)
	if _, err := pgx.ForEachRow(rows, []any{&oid, &quoted, &filtered, &left}, func() error {
		switch {
		case len(left) > 0:
			problems = append(problems, fmt.Sprintf("%s without %s (walcast could not tell who may see its rows)", quoted, strings.Join(left, ", ")))
		case filtered:
			problems = append(problems, fmt.Sprintf("%s with a row filter (walcast would miss the rows it leaves out)", quoted))
		default:
			return nil
		}
		tables = append(tables, quoted)
		return nil
	}); err != nil {
		return fmt.Errorf("read the column lists of publication %s: %w", publication, err)
	}
	if len(problems) == 0 {
		return nil
	}
	pub := schema.QuoteIdent(publication)
	list := strings.Join(tables, ", ")
	return &SetupError{
		Problem: fmt.Sprintf("publication %s publishes %s", publication, strings.Join(problems, "; ")),
		Fix:     fmt.Sprintf("publish the whole table: ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %[1]s ADD TABLE %[2]s;", pub, list),
	}
}

// publicationNamesOption is pgoutput's publication_names option for one
// publication: an SQL string literal holding a list of identifiers, which
// pgoutput splits like SQL does (SplitIdentifierString): a bare name is
// folded to lower case and a comma separates names. walcast treats
// --publication as the exact name, as it does when it creates the
// publication and looks it up, so the name is always double-quoted here:
// "Walcast" stays Walcast instead of streaming the publication walcast, and
// a comma or a quote in the name stays part of it.
func publicationNamesOption(name string) string {
	ident := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	return "'" + strings.ReplaceAll(ident, "'", "''") + "'"
}
