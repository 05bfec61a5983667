package cdc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/schema"
)

// SetupError is a problem with the database's setup that retrying will not
// fix: walcast stops and says what to change.
type SetupError struct {
	Problem string // what is wrong, e.g. "wal_level is replica"
	Fix     string // the exact SQL or configuration line that fixes it
	// Config: the problem is in walcast's configuration (a config file
	// naming a column the table does not have), not the database's
	// setup; walcast exits with status 2, as for any bad setting.
	Config bool
}

func (e *SetupError) Error() string {
	return e.Problem + "; fix: " + e.Fix
}

// IsSetupError reports whether err is (or wraps) a SetupError.
func IsSetupError(err error) bool {
	var se *SetupError
	return errors.As(err, &se)
}

// trackedRel is a tracked table as resolved at a session's start: the
// table walcast follows by its relation id, and the routing columns it has.
type trackedRel struct {
	table   schema.Table
	quoted  string   // its name now, quoted for SQL (differs from table's once renamed)
	routing []string // of the table's routing columns, those it has
	key     []string // the primary key's columns, kept in an oversized row
}

// prepare runs walcast check's checks on the setup connection (see
// diagnose), creates the publication when it is missing, and resolves the
// tracked tables to their relation ids, by which the session follows them
// (a renamed table keeps its id). c.tracked is the previous session's
// result in this process, nil at start: a table renamed while walcast
// runs is still found by its id when the session reconnects, whereas at
// start the configured name must exist.
func (c *Capture) prepare(ctx context.Context, conn *pgx.Conn) (map[uint32]trackedRel, error) {
	current, err := currentNames(ctx, conn, c.cfg.Tables, c.tracked)
	if err != nil {
		return nil, err
	}
	if err := c.diagnose(ctx, conn, current); err != nil {
		return nil, err
	}
	rels := make(map[uint32]trackedRel, len(current))
	quoted := make([]string, len(current)) // in --tables order
	keys := make(map[string][]string, len(current))
	for i, t := range current {
		var oid uint32
		var key []string
		tr := trackedRel{table: c.cfg.Tables[i]}
		// The primary key from the catalog, not pgoutput's key flags: those
		// mark every column under REPLICA IDENTITY FULL.
		err := conn.QueryRow(ctx, `SELECT c.oid, format('%I.%I', n.nspname, c.relname), ARRAY(SELECT a.attname::text FROM pg_attribute a
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($2) ORDER BY a.attnum),
			ARRAY(SELECT a.attname::text FROM pg_index i CROSS JOIN unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
			t.QuotedIdent(), t.Routing()).Scan(&oid, &tr.quoted, &tr.routing, &key)
		if errors.Is(err, pgx.ErrNoRows) {
			err = errors.New("it was dropped or renamed just now") // the next session's diagnosis says what to do
		}
		if err != nil {
			return nil, fmt.Errorf("look up table %s: %w", t.Qualified(), err)
		}
		tr.key = key
		rels[oid] = tr
		quoted[i] = tr.quoted
		c.notePrimaryKey(keys, tr.table, key)
	}
	if c.cfg.OnKeys != nil {
		c.cfg.OnKeys(keys)
	}
	if err := createPublication(ctx, conn, c.cfg.Publication, quoted); err != nil {
		return nil, err
	}
	return rels, nil
}

// currentNames returns the tracked tables under their names now: a table
// of the previous session (prev) whose configured name is gone is named
// as its relation id is now named (renamed while walcast runs). The
// others keep their configured names.
func currentNames(ctx context.Context, conn *pgx.Conn, tables []schema.Table, prev map[uint32]trackedRel) ([]schema.Table, error) {
	current := slices.Clone(tables)
	for id, p := range prev {
		i := slices.IndexFunc(tables, func(t schema.Table) bool { return t.Qualified() == p.table.Qualified() })
		if i < 0 {
			continue
		}
		var nsp, rel string
		err := conn.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = $1 AND to_regclass($2) IS NULL`, id, p.table.QuotedIdent()).Scan(&nsp, &rel)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // the configured name still exists, or the table is gone
		}
		if err != nil {
			return nil, fmt.Errorf("look up table %s by its id: %w", p.table.Qualified(), err)
		}
		current[i].Schema, current[i].Name = nsp, rel
	}
	return current, nil
}

// diagnose runs the checks of walcast check on the setup connection before
// each session, with the tracked tables under their current names. The
// first problem stops capture with a SetupError in walcast check's words
// (a lost slot through slotLost, so that clients resync); a warning is
// logged once per Capture. A query that fails is an ordinary error: the
// session is retried.
func (c *Capture) diagnose(ctx context.Context, conn *pgx.Conn, tables []schema.Table) error {
	limit := c.cfg.MaxRetainedWAL
	if limit <= 0 {
		limit = math.MaxInt64 // capture warns about retained WAL only when asked to
	}
	ch := &checker{conn: conn, cfg: CheckConfig{Slot: c.cfg.Slot, Publication: c.cfg.Publication, Tables: tables, MaxRetainedWAL: limit}}
	for _, step := range ch.steps() {
		n := len(ch.out)
		step(ctx)
		if ch.err != nil {
			return fmt.Errorf("check the database: %w", ch.err)
		}
		for _, f := range ch.out[n:] {
			switch f.Level {
			case LevelProblem:
				if f.Check == "slot WAL" && strings.Contains(f.Detail, "wal_status lost") {
					return c.slotLost()
				}
				return &SetupError{Problem: f.Detail, Fix: f.Fix, Config: f.Check == CheckColumns}
			case LevelWarning:
				if f.Check == CheckState {
					continue // a table without a primary key: said once by notePrimaryKey
				}
				// By check and fix: a detail may carry a figure that moves.
				if key := f.Check + "\x00" + f.Fix; !c.warned[key] {
					c.warned[key] = true
					c.log.Warn("database setup: "+f.Detail, "check", f.Check, "fix", f.Fix)
				}
			}
		}
	}
	return nil
}

// createPublication creates the publication for the tables, given quoted,
// when it does not exist. walcast check's checks (diagnose) have judged
// an existing one.
func createPublication(ctx context.Context, conn *pgx.Conn, publication string, quoted []string) error {
	var exists bool
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", publication).Scan(&exists)
	if err != nil {
		return fmt.Errorf("read publication %s: %w", publication, err)
	}
	if exists {
		return nil
	}
	sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", schema.QuoteIdent(publication), strings.Join(quoted, ", "))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return &SetupError{
			Problem: fmt.Sprintf("cannot create publication %s: %v", publication, err),
			Fix:     sql + "; (run it as the tables' owner or a superuser)",
		}
	}
	return nil
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

// notePrimaryKey records table's primary key columns in keys; a table
// without one has no live state, which is logged once per Capture.
// A key column the configuration excludes never leaves walcast, so the
// key cannot be read from changes: such a table has no state either.
func (c *Capture) notePrimaryKey(keys map[string][]string, table schema.Table, key []string) {
	excluded := slices.IndexFunc(key, func(col string) bool { return !table.Leaves(col) })
	if len(key) > 0 && excluded < 0 {
		keys[table.Qualified()] = key
		return
	}
	w := "no primary key\x00" + table.Qualified()
	if c.warned[w] {
		return
	}
	c.warned[w] = true
	if excluded >= 0 {
		c.log.Warn("a primary key column of the table is excluded by the config file: its rows have no live state and sync reports it unavailable; stop excluding the column to sync it",
			"table", table.Qualified(), "column", key[excluded])
		return
	}
	c.log.Warn("table has no primary key: its rows have no live state and sync reports it unavailable; add a primary key to sync it",
		"table", table.Qualified())
}
