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

// prepare checks what replication needs and creates the publication when
// it is missing. It returns SetupErrors for what it cannot fix.
func prepare(ctx context.Context, conn *pgx.Conn, publication string, tables []schema.Table) error {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return &SetupError{
			Problem: fmt.Sprintf("wal_level is %s, logical replication needs logical", walLevel),
			Fix:     "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (a reload is not enough)",
		}
	}
	var canReplicate bool
	var role string
	if err := conn.QueryRow(ctx, `SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&role, &canReplicate); err != nil {
		return fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return &SetupError{
			Problem: fmt.Sprintf("role %s has no REPLICATION attribute", role),
			Fix:     fmt.Sprintf("ALTER ROLE %s WITH REPLICATION;", schema.QuoteIdent(role)),
		}
	}
	for _, t := range tables {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t.QuotedIdent()).Scan(&exists); err != nil {
			return fmt.Errorf("look up table %s: %w", t.Qualified(), err)
		}
		if !exists {
			return &SetupError{
				Problem: fmt.Sprintf("tracked table %s does not exist", t.Qualified()),
				Fix:     fmt.Sprintf("create it (walcast's election schema is schema/election.sql), or map an existing table with --tables name=%s", t.Kind),
			}
		}
	}
	return ensurePublication(ctx, conn, publication, tables)
}

func ensurePublication(ctx context.Context, conn *pgx.Conn, publication string, tables []schema.Table) error {
	var exists, allTables bool
	err := conn.QueryRow(ctx, "SELECT true, puballtables FROM pg_publication WHERE pubname = $1", publication).Scan(&exists, &allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		list := make([]string, len(tables))
		for i, t := range tables {
			list[i] = t.QuotedIdent()
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
	rows, err := conn.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", publication)
	if err != nil {
		return fmt.Errorf("read tables of publication %s: %w", publication, err)
	}
	published := map[string]bool{}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return fmt.Errorf("read tables of publication %s: %w", publication, err)
		}
		published[s+"."+t] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read tables of publication %s: %w", publication, err)
	}
	for _, t := range tables {
		if !published[t.Qualified()] {
			return &SetupError{
				Problem: fmt.Sprintf("publication %s does not include tracked table %s", publication, t.Qualified()),
				Fix:     fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", schema.QuoteIdent(publication), t.QuotedIdent()),
			}
		}
	}
	return nil
}
