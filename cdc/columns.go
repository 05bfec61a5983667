package cdc

import (
	"context"
	"fmt"
	"strings"

	"github.com/walcast/walcast/schema"
)

// CheckColumns is the check of the columns a configuration names: routing
// columns, exclude/include lists and dashboard columns. Its problems are
// mistakes in walcast's configuration rather than the database's setup:
// start-up refuses them as usage errors (SetupError.Config).
const CheckColumns = "columns"

// CheckDashboard is the check of the dashboard fields: a field whose
// columns are missing is left out of the dashboards (a warning).
const CheckDashboard = "dashboard"

// tableColumns returns a table's columns and their types
// (format_type), in order; nil when the table does not exist.
func (c *checker) tableColumns(ctx context.Context, quoted string) ([]string, map[string]string, error) {
	rows, err := c.conn.Query(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, quoted)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var names []string
	types := map[string]string{}
	for rows.Next() {
		var n, t string
		if err := rows.Scan(&n, &t); err != nil {
			return nil, nil, err
		}
		names = append(names, n)
		types[n] = t
	}
	return names, types, rows.Err()
}

// integerTypes are the types whose values are always exact integers.
var integerTypes = map[string]bool{"smallint": true, "integer": true, "bigint": true}

// columns checks that every column the configuration names exists, that
// configured routing columns hold exact integers, and which dashboard
// fields can be computed.
func (c *checker) columns(ctx context.Context) {
	for _, ti := range c.tableInfo {
		if !ti.exists {
			continue // the table check said so
		}
		t := ti.table
		names, types, err := c.tableColumns(ctx, ti.quoted)
		if err != nil {
			c.failed(CheckColumns, "read the columns of "+t.Qualified(), err)
			return
		}
		has := func(col string) bool { _, ok := types[col]; return ok }
		listed := "its columns: " + strings.Join(names, ", ")
		missing := func(col, role string) {
			c.add(Finding{Check: CheckColumns, Level: LevelProblem,
				Detail: fmt.Sprintf("%s has no column %s (named as %s in the config file)", t.Qualified(), col, role),
				Fix:    fmt.Sprintf("correct %s of table %s in the config file (%s), or add the column", role, t.Qualified(), listed)})
		}
		for _, r := range []struct{ set, col, role string }{
			{t.Committee, t.CommitteeCol(), "committee"}, {t.Owner, t.OwnerCol(), "owner"},
		} {
			if r.col == "" {
				continue
			}
			if r.set == "" && !has(r.col) {
				continue // walcast's default name, absent: the table is not scoped by it, as with --tables
			}
			if !has(r.col) {
				missing(r.col, r.role)
				continue
			}
			if r.set != "" && !integerTypes[types[r.col]] {
				c.add(Finding{Check: CheckColumns, Level: LevelWarning,
					Detail: fmt.Sprintf("%s.%s, the %s routing column, is %s: a row whose value is not an exact integer goes to admins only", t.Qualified(), r.col, r.role, types[r.col]),
					Fix:    fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint USING %s::bigint;", ti.quoted, schema.QuoteIdent(r.col), schema.QuoteIdent(r.col))})
			}
		}
		if f := t.Columns; f != nil {
			for _, col := range f.Exclude {
				if !has(col) {
					// A misspelt exclude would let the real column out.
					missing(col, "exclude")
				}
			}
			for _, col := range f.Include {
				if !has(col) {
					missing(col, "include")
				}
			}
		}
		c.dashboardColumns(ctx, ti, has, missing)
	}
}

// dashboardColumns checks the columns the dashboards read from a table of
// an election kind. A column the config file names must exist (a
// problem); one of walcast's default names that is missing leaves its
// dashboard field out (a warning).
func (c *checker) dashboardColumns(ctx context.Context, ti tableInfo, has func(string) bool, missing func(col, role string)) {
	t := ti.table
	d := t.Dashboard
	if d == nil {
		d = &schema.DashboardColumns{}
	}
	field := func(set, def, role, what string) {
		col := set
		switch set {
		case schema.NoColumn:
			return
		case "":
			col = def
		}
		if has(col) {
			return
		}
		if set != "" {
			missing(col, "dashboard "+role)
			return
		}
		c.add(Finding{Check: CheckDashboard, Level: LevelWarning,
			Detail: fmt.Sprintf("%s has no column %s: dashboards leave out %s", t.Qualified(), col, what),
			Fix:    fmt.Sprintf("name the column in the config file (tables: - table: %s, dashboard: {%s: your_column}), or %s: none to leave it out without this warning", t.Qualified(), role, role)})
	}
	switch t.Kind {
	case schema.KindGuarantee:
		field(d.Status, "status", "status", "the guarantee counts by status")
		c.electors(ctx, t, d.Electors)
	case schema.KindAttendance:
		field(d.Attended, "attended", "attended", "the attendance counts")
	case schema.KindVoteCount:
		field(d.Votes, "votes", "votes", "the votes")
	}
	if t.Kind == schema.KindGuarantee || t.Kind == schema.KindAttendance {
		if t.OwnerCol() == "" || t.Owner == "" && !has(t.OwnerCol()) {
			c.add(Finding{Check: CheckDashboard, Level: LevelWarning,
				Detail: fmt.Sprintf("%s has no owner column: personal dashboards do not count its rows", t.Qualified()),
				Fix:    fmt.Sprintf("name the column holding the user's id in the config file (tables: - table: %s, owner: your_column), or ignore this if its rows belong to no user", t.Qualified())})
		}
	}
}

// electors checks where the electors count comes from.
func (c *checker) electors(ctx context.Context, t schema.Table, set string) {
	tbl, col := t.ElectorsSource()
	if tbl == "" {
		return
	}
	names, types, err := c.tableColumns(ctx, tbl)
	if err != nil {
		c.failed(CheckColumns, "read the columns of "+tbl, err)
		return
	}
	_, ok := types[col]
	_, hasID := types["id"]
	if ok && hasID {
		return
	}
	what := fmt.Sprintf("%s has no column %s", tbl, col)
	if names == nil {
		what = tbl + " does not exist"
	} else if !hasID {
		what = tbl + " has no id column"
	}
	if set != "" {
		c.add(Finding{Check: CheckColumns, Level: LevelProblem,
			Detail: what + " (named as dashboard electors of " + t.Qualified() + " in the config file)",
			Fix:    "correct dashboard electors in the config file (committee_table.column), or electors: none"})
		return
	}
	c.add(Finding{Check: CheckDashboard, Level: LevelWarning,
		Detail: what + ": dashboards send electors as null",
		Fix:    fmt.Sprintf("name the committee table and its electors column in the config file (tables: - table: %s, dashboard: {electors: committee_table.column}), or electors: none", t.Qualified())})
}
