package cdc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/schema"
)

// Level says how much a Finding matters.
type Level int

// The levels of a Finding, from harmless to blocking.
const (
	LevelOK      Level = iota // as walcast needs it
	LevelInfo                 // not there yet, but walcast will set it up
	LevelWarning              // walcast works, but something is lost or at risk
	LevelProblem              // walcast cannot work until it is fixed
)

func (l Level) String() string {
	switch l {
	case LevelOK:
		return "ok"
	case LevelInfo:
		return "info"
	case LevelWarning:
		return "warning"
	case LevelProblem:
		return "problem"
	}
	return "level(" + strconv.Itoa(int(l)) + ")"
}

// Finding is one line of `walcast check`.
type Finding struct {
	Check  string // short name, e.g. "wal_level"
	Level  Level  // LevelOK, LevelInfo, LevelWarning or LevelProblem
	Detail string // what was found
	Fix    string // exact SQL/config to fix it, "" when nothing to do
}

// CheckConfig is what Check looks at: the database and the names walcast
// would use in it.
type CheckConfig struct {
	DatabaseURL string
	Slot        string
	Publication string
	Tables      []schema.Table
	// MaxRetainedWAL is the retained WAL past which the slot is a
	// warning (walcast's --max-retained-wal); 0 means the default, 1 GiB.
	MaxRetainedWAL int64
	// State, when set, reads the live state's status from the bus, which
	// Check then judges; nil: the state is not checked (start-up).
	State func(ctx context.Context) (StateReport, error)
}

// sizeText writes a byte count the way PostgreSQL's settings do (1024-based).
func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// retainedWALWarning is how much WAL a slot may hold back before Check
// warns: past it, a stopped or lagging walcast is filling the server's disk.
const retainedWALWarning = 1 << 30

// checkConnectTimeout bounds the connection attempt when the URL sets no
// connect_timeout: a check must answer, not hang on a black-holed host.
const checkConnectTimeout = 10 * time.Second

// Check diagnoses the database's setup for walcast: every check it can run,
// in order, one Finding each (a few yield one per tracked table). A failed
// connection yields one Problem finding. It never returns an error for a
// database problem, only findings; a query that fails is a Problem finding
// of the check that ran it.
func Check(ctx context.Context, cfg CheckConfig) []Finding {
	conn, first := checkConnect(ctx, cfg.DatabaseURL)
	if conn == nil {
		return []Finding{first}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c := &checker{conn: conn, cfg: cfg}
	c.add(first)
	for _, step := range c.steps() {
		if conn.IsClosed() {
			c.add(Finding{Check: "connection", Level: LevelProblem,
				Detail: "the connection was lost during the check",
				Fix:    "run walcast check again; if it recurs, PostgreSQL's log says why it closed the connection"})
			break
		}
		step(ctx)
	}
	return c.out
}

// steps are the checks, in the order Check runs them and start-up stops
// at the first problem.
func (c *checker) steps() []func(context.Context) {
	return []func(context.Context){c.server, c.walLevel, c.slotLimit, c.walSenders, c.role, c.tables, c.columns, c.publication, c.slot, c.state}
}

// checker holds one run of Check: the connection, and what earlier checks
// learned that later ones need.
type checker struct {
	conn *pgx.Conn
	cfg  CheckConfig
	out  []Finding
	err  error // the first query that failed, for start-up: a retry may succeed

	database   string // current_database()
	superuser  bool
	inRecovery bool
	version    int // server_version_num
	tableInfo  []tableInfo
}

// tableInfo is what pg_class says about one tracked table.
type tableInfo struct {
	table  schema.Table
	quoted string // schema.name quoted as SQL needs it (format's %I)
	exists bool
	owned  bool // the current role may act as its owner
	hasPK  bool // it has a primary key, and so a live state
}

func (c *checker) add(f Finding) { c.out = append(c.out, f) }

// failed records a check that could not run because a query failed. It is
// a problem because nothing was verified; the error says what to fix.
func (c *checker) failed(check, what string, err error) {
	if c.err == nil {
		c.err = fmt.Errorf("%s: %w", what, err)
	}
	c.add(Finding{Check: check, Level: LevelProblem, Detail: fmt.Sprintf("could not %s: %v", what, err)})
}

// checkConnect opens the connection and describes it, or describes why it
// could not be opened, with the password kept out of the message.
func checkConnect(ctx context.Context, dbURL string) (*pgx.Conn, Finding) {
	const check = "connection"
	pcfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, Finding{Check: check, Level: LevelProblem,
			Detail: "cannot parse the database URL: " + redactPassword(redactURLError(err).Error(), dbURL, ""),
			Fix:    "write --database-url as postgres://user:password@host:5432/dbname (percent-encode special characters in the password)"}
	}
	if pcfg.ConnectTimeout == 0 {
		pcfg.ConnectTimeout = checkConnectTimeout
	}
	if _, set := pcfg.RuntimeParams["application_name"]; !set {
		pcfg.RuntimeParams["application_name"] = "walcast check"
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return nil, Finding{Check: check, Level: LevelProblem,
			Detail: "cannot connect: " + redactPassword(err.Error(), dbURL, pcfg.Password),
			Fix:    connectFix(err, pcfg)}
	}
	return conn, Finding{Check: check, Level: LevelOK,
		Detail: fmt.Sprintf("connected to %s as %s", where(pcfg), pcfg.User)}
}

// where names the server and database of a connection, for people.
func where(cfg *pgx.ConnConfig) string {
	host := cfg.Host
	if strings.HasPrefix(host, "/") {
		host = "socket " + host
	} else {
		host += ":" + strconv.Itoa(int(cfg.Port))
	}
	return host + "/" + cfg.Database
}

// connectFix says what to change when a connection fails, by the reason
// the server gave, if it gave one.
func connectFix(err error, cfg *pgx.ConnConfig) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01": // invalid_password
			return "check the user name and password in --database-url (or PGPASSWORD, ~/.pgpass)"
		case "28000": // invalid_authorization_specification: no pg_hba.conf entry
			return fmt.Sprintf("allow this client in the server's pg_hba.conf, e.g. `host %s %s <client address>/32 scram-sha-256`, then SELECT pg_reload_conf();",
				cfg.Database, cfg.User)
		case "3D000": // invalid_catalog_name
			return fmt.Sprintf("create the database (CREATE DATABASE %s;) or fix its name in --database-url", pgx.Identifier{cfg.Database}.Sanitize())
		case "53300": // too_many_connections
			return "the server is at max_connections; close idle sessions or raise it: ALTER SYSTEM SET max_connections = 200; then restart PostgreSQL"
		}
	}
	return "check host, port, user and database in --database-url (postgres://user:password@host:5432/dbname), " +
		"that PostgreSQL runs and listens there (listen_addresses, firewall), and that pg_hba.conf lets this client in"
}

// redactPassword replaces the URL's password, and password if given, in msg.
// pgx already masks passwords in the errors it makes; this also covers a
// password echoed by anything else. Very short passwords are left alone, as
// replacing them would garble the message.
func redactPassword(msg, dbURL, password string) string {
	secrets := []string{password}
	if u, err := url.Parse(dbURL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
	}
	for _, s := range secrets {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}

// server learns the facts later checks depend on, and reports a standby.
func (c *checker) server(ctx context.Context) {
	var version string
	err := c.conn.QueryRow(ctx, `SELECT current_database(), current_setting('server_version_num'), pg_is_in_recovery(),
		coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)`).
		Scan(&c.database, &version, &c.inRecovery, &c.superuser)
	if err != nil {
		c.failed("server", "read the server's state", err)
		return
	}
	c.version, _ = strconv.Atoi(version)
	if c.inRecovery {
		c.add(Finding{Check: "server", Level: LevelProblem,
			Detail: "the server is a standby (in recovery): walcast cannot create its publication or slot here",
			Fix:    "point --database-url at the primary server"})
	}
}

// setting reads one server setting and whether a changed value waits for
// a restart.
func (c *checker) setting(ctx context.Context, name string) (value string, pending bool, err error) {
	err = c.conn.QueryRow(ctx, "SELECT setting, pending_restart FROM pg_settings WHERE name = $1", name).Scan(&value, &pending)
	if err != nil {
		return "", false, fmt.Errorf("read setting %s: %w", name, err)
	}
	return value, pending, nil
}

// intSetting reads an integer setting.
func (c *checker) intSetting(ctx context.Context, name string) (int, error) {
	v, _, err := c.setting(ctx, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("read setting %s: %q is not an integer", name, v)
	}
	return n, nil
}

func pendingNote(pending bool) string {
	if pending {
		return " (a changed value waits for a restart)"
	}
	return ""
}

func (c *checker) walLevel(ctx context.Context) {
	const check = "wal_level"
	level, pending, err := c.setting(ctx, "wal_level")
	if err != nil {
		c.failed(check, "read wal_level", err)
		return
	}
	if level == "logical" {
		c.add(Finding{Check: check, Level: LevelOK, Detail: level})
		return
	}
	c.add(Finding{Check: check, Level: LevelProblem,
		Detail: fmt.Sprintf("wal_level is %s, logical replication needs logical%s", level, pendingNote(pending)),
		Fix:    "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (a reload is not enough)"})
}

// capacity reads a limit setting and counts its use with count, scanned
// into dest (used first). It returns the limit and the fix that raises
// it; ok is false when it could not tell.
func (c *checker) capacity(ctx context.Context, check, setting, count string, dest []any, args ...any) (limit int, fix string, ok bool) {
	limit, err := c.intSetting(ctx, setting)
	if err != nil {
		c.failed(check, "read "+setting, err)
		return 0, "", false
	}
	if err := c.conn.QueryRow(ctx, count, args...).Scan(dest...); err != nil {
		c.failed(check, "count "+check, err)
		return 0, "", false
	}
	used := *dest[0].(*int)
	return limit, fmt.Sprintf("ALTER SYSTEM SET %s = %d; then restart PostgreSQL", setting, max(10, used+1)), true
}

func (c *checker) slotLimit(ctx context.Context) {
	const check = "replication slots"
	var used, ours int
	limit, fix, ok := c.capacity(ctx, check, "max_replication_slots",
		"SELECT count(*), count(*) FILTER (WHERE slot_name = $1) FROM pg_replication_slots", []any{&used, &ours}, c.cfg.Slot)
	switch {
	case !ok:
	case limit == 0:
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: "max_replication_slots is 0: no replication slot can be created", Fix: fix})
	case ours == 0 && used >= limit:
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: fmt.Sprintf("all %d replication slots (max_replication_slots) are taken and slot %s does not exist yet", limit, c.cfg.Slot),
			Fix:    fix + ", or drop a slot nobody reads: SELECT pg_drop_replication_slot('name');"})
	default:
		c.add(Finding{Check: check, Level: LevelOK,
			Detail: fmt.Sprintf("max_replication_slots = %d, %d in use", limit, used)})
	}
}

func (c *checker) walSenders(ctx context.Context) {
	const check = "wal senders"
	var used int
	limit, fix, ok := c.capacity(ctx, check, "max_wal_senders",
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'", []any{&used})
	switch {
	case !ok:
	case limit == 0:
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: "max_wal_senders is 0: no replication connection is allowed", Fix: fix})
	case used >= limit:
		c.add(Finding{Check: check, Level: LevelWarning,
			Detail: fmt.Sprintf("all %d wal senders (max_wal_senders) are busy: walcast's replication connection is refused until one is free", limit),
			Fix:    fix})
	default:
		c.add(Finding{Check: check, Level: LevelOK,
			Detail: fmt.Sprintf("max_wal_senders = %d, %d in use", limit, used)})
	}
}

func (c *checker) role(ctx context.Context) {
	const check = "role"
	var name, quoted string
	var super, repl bool
	err := c.conn.QueryRow(ctx, `SELECT rolname, format('%I', rolname), rolsuper, rolreplication
		FROM pg_roles WHERE rolname = current_user`).Scan(&name, &quoted, &super, &repl)
	if err != nil {
		c.failed(check, "read the role's attributes", err)
		return
	}
	switch {
	case super:
		c.add(Finding{Check: check, Level: LevelOK, Detail: fmt.Sprintf("%s is a superuser", name)})
	case repl:
		c.add(Finding{Check: check, Level: LevelOK, Detail: fmt.Sprintf("%s has REPLICATION", name)})
	default:
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: fmt.Sprintf("%s has neither REPLICATION nor superuser: it cannot open a replication connection", name),
			Fix:    fmt.Sprintf("ALTER ROLE %s WITH REPLICATION; (as a superuser)", quoted)})
	}
}

// tables checks that every tracked table exists, is a table, and has a
// replica identity that lets its updates and deletes through.
func (c *checker) tables(ctx context.Context) {
	schemas := make([]string, len(c.cfg.Tables))
	names := make([]string, len(c.cfg.Tables))
	for i, t := range c.cfg.Tables {
		schemas[i], names[i] = t.Schema, t.Name
	}
	// One row per tracked table, in order; the pg_class columns are NULL
	// for a table that does not exist.
	rows, err := c.conn.Query(ctx, `SELECT format('%I.%I', t.s, t.n), c.relkind::text, c.relreplident::text,
			EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			pg_has_role(c.relowner, 'USAGE')
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(s, n, i)
		LEFT JOIN pg_namespace ns ON ns.nspname = t.s
		LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n
		ORDER BY t.i`, schemas, names)
	if err != nil {
		c.failed("table", "look up the tracked tables", err)
		return
	}
	i := 0
	var missing []missingAt
	for rows.Next() {
		var quoted string
		var kind, ident *string
		var hasPK bool
		var owned *bool
		if err := rows.Scan(&quoted, &kind, &ident, &hasPK, &owned); err != nil {
			rows.Close()
			c.failed("table", "look up the tracked tables", err)
			return
		}
		t := c.cfg.Tables[i]
		i++
		info := tableInfo{table: t, quoted: quoted, exists: kind != nil, owned: owned != nil && *owned, hasPK: hasPK}
		c.tableInfo = append(c.tableInfo, info)
		switch {
		case kind == nil:
			missing = append(missing, missingAt{len(c.out), t})
			c.add(Finding{Check: "table", Level: LevelProblem,
				Detail: fmt.Sprintf("%s does not exist (tracked as %s)", t.Qualified(), t.Label()),
				Fix: fmt.Sprintf("create the election tables with schema/election.sql (psql \"$DATABASE_URL\" -f schema/election.sql), "+
					"or track an existing table with --tables name=%s", t.Label())})
		case *kind != "r" && *kind != "p":
			c.add(Finding{Check: "table", Level: LevelProblem,
				Detail: fmt.Sprintf("%s is a %s, not a table: only tables can be published", t.Qualified(), relkindName(*kind)),
				Fix:    fmt.Sprintf("track the table it reads from instead, with --tables name=%s", t.Label())})
		default:
			c.add(replicaIdentityFinding(t, quoted, *ident, hasPK))
			if !hasPK {
				c.add(noKeyFinding(t, quoted))
			}
		}
	}
	if err := rows.Err(); err != nil {
		c.failed("table", "look up the tracked tables", err)
		return
	}
	// A missing table the publication still holds under another name was
	// renamed or moved (publications follow a table): say so.
	if len(missing) > 0 {
		if others := unnamedPublished(ctx, c.conn, c.cfg.Publication, c.cfg.Tables); len(others) > 0 {
			for _, m := range missing {
				f := &c.out[m.i]
				f.Detail += fmt.Sprintf("; publication %s publishes %s, which --tables does not name", c.cfg.Publication, strings.Join(others, ", "))
				f.Fix = renamedFix(m.t, others[0]) + "; otherwise " + f.Fix
			}
		}
	}
}

// renamedFix is the fix for a tracked table that may have been renamed to
// now.
func renamedFix(t schema.Table, now string) string {
	return fmt.Sprintf("if %s was renamed or moved to another schema (e.g. a Django RenameModel), track it under its new name: --tables %s=%s (with the other tables)",
		t.Qualified(), now, t.Label())
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

// missingAt is a tracked table found missing, and its finding's index.
type missingAt struct {
	i int
	t schema.Table
}

func relkindName(k string) string {
	switch k {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "S":
		return "sequence"
	case "i", "I":
		return "index"
	}
	return "relation of kind " + k
}

// replicaIdentityFinding judges a table's replica identity (relreplident).
func replicaIdentityFinding(t schema.Table, quoted, ident string, hasPK bool) Finding {
	f := Finding{Check: "replica identity", Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", quoted)}
	switch {
	case ident == "f":
		return Finding{Check: f.Check, Level: LevelOK, Detail: t.Qualified() + " has REPLICA IDENTITY FULL"}
	case ident == "d" && hasPK:
		f.Level = LevelWarning
		f.Detail = t.Qualified() + " has REPLICA IDENTITY DEFAULT (its primary key): deleted rows carry only the key and updates carry no old values"
	case ident == "i":
		f.Level = LevelWarning
		f.Detail = t.Qualified() + " has REPLICA IDENTITY USING INDEX: deleted rows carry only the index's columns and updates carry no old values"
	case ident == "d":
		f.Level = LevelProblem
		f.Detail = t.Qualified() + " has REPLICA IDENTITY DEFAULT but no primary key: once published, PostgreSQL rejects its UPDATEs and DELETEs"
	default: // "n"
		f.Level = LevelProblem
		f.Detail = t.Qualified() + " has REPLICA IDENTITY NOTHING: once published, PostgreSQL rejects its UPDATEs and DELETEs"
	}
	return f
}

// publication checks that the publication exists and covers every tracked
// table, or that walcast can create it.
func (c *checker) publication(ctx context.Context) {
	const check = "publication"
	var quoted string
	if err := c.conn.QueryRow(ctx, "SELECT format('%I', $1::text)", c.cfg.Publication).Scan(&quoted); err != nil {
		c.failed(check, "quote the publication name", err)
		return
	}
	var allTables, ins, upd, del bool
	err := c.conn.QueryRow(ctx, "SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1",
		c.cfg.Publication).Scan(&allTables, &ins, &upd, &del)
	if errors.Is(err, pgx.ErrNoRows) {
		c.missingPublication(ctx, quoted)
		return
	}
	if err != nil {
		c.failed(check, "read publication "+c.cfg.Publication, err)
		return
	}
	n := len(c.out)
	if !allTables && !c.publicationCoverage(ctx, quoted) {
		return
	}
	c.publishedActions(quoted, ins, upd, del)
	if !c.publicationFilters(ctx, quoted) {
		return
	}
	if len(c.out) == n {
		what := fmt.Sprintf("the %d tracked tables", len(c.cfg.Tables))
		if allTables {
			what = "all tables"
		}
		c.add(Finding{Check: check, Level: LevelOK, Detail: fmt.Sprintf("publication %s publishes %s", c.cfg.Publication, what)})
	}
}

// publicationCoverage adds a problem for the tracked tables the
// publication leaves out. It returns false when it could not tell.
func (c *checker) publicationCoverage(ctx context.Context, quoted string) bool {
	published, err := c.publishedTables(ctx)
	if err != nil {
		c.failed("publication", "read the tables of publication "+c.cfg.Publication, err)
		return false
	}
	var missing []string
	for _, ti := range c.tableInfo {
		if ti.exists && !published[ti.table.Qualified()] {
			missing = append(missing, ti.quoted)
		}
	}
	if len(missing) == 0 {
		return true
	}
	whose := "their"
	if len(missing) == 1 {
		whose = "its"
	}
	c.add(Finding{Check: "publication", Level: LevelProblem,
		Detail: fmt.Sprintf("publication %s does not include %s: walcast receives none of %s changes", c.cfg.Publication, strings.Join(missing, ", "), whose),
		Fix:    fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", quoted, strings.Join(missing, ", "))})
	return true
}

// publishedActions warns about the kinds of change the publication leaves
// out.
func (c *checker) publishedActions(quoted string, ins, upd, del bool) {
	var skipped []string
	for _, a := range []struct {
		on   bool
		name string
	}{{ins, "inserts"}, {upd, "updates"}, {del, "deletes"}} {
		if !a.on {
			skipped = append(skipped, a.name)
		}
	}
	if len(skipped) == 0 {
		return
	}
	c.add(Finding{Check: "publication", Level: LevelWarning,
		Detail: fmt.Sprintf("publication %s does not publish %s: walcast never sees them", c.cfg.Publication, strings.Join(skipped, " or ")),
		Fix:    fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", quoted)})
}

// publicationFilters judges the row filters and column lists of the
// tracked tables. A row filter, or a column list without committee_id or
// user_id, is a problem (walcast would miss rows, or could not tell who may
// see them, so it refuses to start); a column list that keeps them only
// loses data. It returns false when it could not tell.
func (c *checker) publicationFilters(ctx context.Context, quoted string) bool {
	filtered, err := c.filteredTables(ctx)
	if err != nil {
		c.failed("publication", "read the row filters of publication "+c.cfg.Publication, err)
		return false
	}
	var refused, reasons, partial []string
	for _, f := range filtered {
		if f.reason != "" {
			refused = append(refused, f.quoted)
			reasons = append(reasons, f.reason)
		} else {
			partial = append(partial, f.quoted)
		}
	}
	fix := func(list []string) string {
		return fmt.Sprintf("publish the whole table: ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %[1]s ADD TABLE %[2]s;", quoted, strings.Join(list, ", "))
	}
	if len(refused) > 0 {
		c.add(Finding{Check: "publication", Level: LevelProblem,
			Detail: fmt.Sprintf("publication %s publishes %s, so walcast refuses to start", c.cfg.Publication, strings.Join(reasons, "; ")),
			Fix:    fix(refused)})
	}
	if len(partial) > 0 {
		c.add(Finding{Check: "publication", Level: LevelWarning,
			Detail: fmt.Sprintf("publication %s publishes only some rows or columns of %s: walcast misses the rest", c.cfg.Publication, strings.Join(partial, ", ")),
			Fix:    fix(partial)})
	}
	return true
}

// missingPublication reports a publication walcast will create, or cannot.
func (c *checker) missingPublication(ctx context.Context, quoted string) {
	list := make([]string, len(c.tableInfo))
	for i, ti := range c.tableInfo {
		list[i] = ti.quoted
	}
	create := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s;", quoted, strings.Join(list, ", "))
	canCreate := c.superuser
	if !canCreate {
		err := c.conn.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&canCreate)
		if err != nil {
			c.failed("publication", "read the role's privileges on the database", err)
			return
		}
		for _, ti := range c.tableInfo {
			if ti.exists && !ti.owned {
				canCreate = false
			}
		}
	}
	if !canCreate {
		c.add(Finding{Check: "publication", Level: LevelProblem,
			Detail: fmt.Sprintf("publication %s does not exist, and this role cannot create it (that needs CREATE on the database and ownership of the tables)", c.cfg.Publication),
			Fix:    "run as the tables' owner or a superuser: " + create})
		return
	}
	c.add(Finding{Check: "publication", Level: LevelInfo,
		Detail: fmt.Sprintf("publication %s does not exist yet; walcast creates it on first start with: %s", c.cfg.Publication, create)})
}

// publishedTables returns the publication's tables as "schema.name".
func (c *checker) publishedTables(ctx context.Context) (map[string]bool, error) {
	rows, err := c.conn.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", c.cfg.Publication)
	if err != nil {
		return nil, err
	}
	published := map[string]bool{}
	var s, t string
	_, err = pgx.ForEachRow(rows, []any{&s, &t}, func() error {
		published[s+"."+t] = true
		return nil
	})
	return published, err
}

// filteredTable is a tracked table that the publication publishes with a
// row filter or a column list.
type filteredTable struct {
	quoted string
	// reason says why walcast refuses it (a row filter, or a column list
	// without a routing column); "" for a column list that keeps them.
	reason string
}

// filteredTables returns the tracked tables that the publication publishes
// with a row filter or a column list (PostgreSQL 15 and later).
func (c *checker) filteredTables(ctx context.Context) ([]filteredTable, error) {
	if c.version < 150000 {
		return nil, nil
	}
	rows, err := c.conn.Query(ctx, `SELECT n.nspname, c.relname, r.prqual IS NOT NULL,
			ARRAY(SELECT a.attname::text FROM pg_attribute a
				WHERE a.attrelid = r.prrelid AND a.attname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped
				AND r.prattrs IS NOT NULL AND NOT a.attnum = ANY(r.prattrs::int2[]) ORDER BY a.attnum)
		FROM pg_publication_rel r
		JOIN pg_publication p ON p.oid = r.prpubid
		JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1 AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL)`,
		c.cfg.Publication, routingNames(c.cfg.Tables))
	if err != nil {
		return nil, err
	}
	reasons := map[string]string{} // by qualified name
	var s, t string
	var rowFilter bool
	var left []string
	if _, err := pgx.ForEachRow(rows, []any{&s, &t, &rowFilter, &left}, func() error {
		reasons[s+"."+t] = ""
		switch {
		case len(left) > 0:
			reasons[s+"."+t] = fmt.Sprintf(" without %s (walcast could not tell who may see its rows)", strings.Join(left, ", "))
		case rowFilter:
			reasons[s+"."+t] = " with a row filter (walcast would miss the rows it leaves out)"
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var out []filteredTable
	for _, ti := range c.tableInfo {
		if r, ok := reasons[ti.table.Qualified()]; ok {
			f := filteredTable{quoted: ti.quoted}
			if r != "" {
				f.reason = ti.quoted + r
			}
			out = append(out, f)
		}
	}
	return out, nil
}

// slot checks the replication slot: its plugin, database, holder, and how
// much WAL it keeps on the server's disk.
func (c *checker) slot(ctx context.Context) {
	const check = "slot"
	name := c.cfg.Slot
	s, exists, err := readSlot(ctx, c.conn, name)
	if err != nil {
		c.failed(check, "read slot "+name, err)
		return
	}
	if !exists {
		c.add(Finding{Check: check, Level: LevelInfo,
			Detail: fmt.Sprintf("slot %s does not exist yet; walcast creates it on first start (plugin pgoutput)", name)})
		return
	}
	switch {
	case s.Plugin == "":
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: fmt.Sprintf("slot %s is a physical replication slot (a standby's), walcast needs a logical one with pgoutput", name),
			Fix:    "choose another --slot"})
	case s.Plugin != "pgoutput":
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: fmt.Sprintf("slot %s uses plugin %s, walcast needs pgoutput", name, s.Plugin),
			Fix:    "choose another --slot, or drop it if nothing else reads it: " + dropSlotSQL(name)})
	case s.Database != c.database:
		c.add(Finding{Check: check, Level: LevelProblem,
			Detail: fmt.Sprintf("slot %s belongs to database %s, not %s", name, s.Database, c.database),
			Fix:    "choose another --slot for this database"})
	default:
		state := "inactive (no walcast reads it now)"
		if s.ActivePID != 0 {
			state = fmt.Sprintf("active, read by PID %d (%s)", s.ActivePID, s.Holder)
		}
		c.add(Finding{Check: check, Level: LevelOK,
			Detail: fmt.Sprintf("slot %s uses pgoutput, is %s, confirmed up to %s", name, state, pglogrepl.LSN(s.ConfirmedFlushLSN))})
	}
	c.add(slotWALFinding(s, c.cfg.MaxRetainedWAL))
}

// dropSlotSQL is the statement that drops the slot.
func dropSlotSQL(slot string) string {
	return fmt.Sprintf("SELECT pg_drop_replication_slot('%s');", strings.ReplaceAll(slot, "'", "''"))
}

// lostSlotFinding is what walcast says of a slot PostgreSQL invalidated,
// in walcast check and when capture stops on it.
func lostSlotFinding(slot string) Finding {
	return Finding{Check: "slot WAL", Level: LevelProblem,
		Detail: fmt.Sprintf("slot %s is lost: it was invalidated by PostgreSQL (wal_status lost), which removed WAL it still needed, so changes were lost", slot),
		Fix: "1. " + dropSlotSQL(slot) + "\n" +
			"2. restart walcast once with --new-epoch: it creates the slot again, streams from that moment, discards the stored history and tells every client to resync\n" +
			"3. have clients refetch their data: changes made while the slot was lost never reached them\n" +
			"(step 1 is also: walcast slot drop --slot " + slot + " --yes)"}
}

// slotWALFinding judges a slot's WAL retention.
func slotWALFinding(s SlotInfo, limit int64) Finding {
	if limit <= 0 {
		limit = retainedWALWarning
	}
	if s.WALStatus == "lost" {
		return lostSlotFinding(s.Name)
	}
	parts := []string{"wal_status " + s.WALStatus}
	if s.RetainedWALPretty != "" {
		parts = append(parts, "retains "+s.RetainedWALPretty+" of WAL")
	}
	if s.SafeWALSizePretty != "" {
		parts = append(parts, s.SafeWALSizePretty+" more before PostgreSQL invalidates it (max_slot_wal_keep_size)")
	}
	f := Finding{Check: "slot WAL", Level: LevelOK, Detail: "slot " + s.Name + ": " + strings.Join(parts, ", ")}
	switch {
	case s.WALStatus == "unreserved":
		f.Level = LevelWarning
		f.Detail += ": it is lost at the next checkpoint unless walcast catches up"
		f.Fix = "keep walcast running so it confirms its position, or raise the limit: ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();"
	case s.RetainedWAL > limit:
		f.Level = LevelWarning
		f.Detail += fmt.Sprintf(": more than %s, which fills the server's disk while walcast is stopped or behind", sizeText(limit))
		f.Fix = "keep walcast running so it confirms its position; if nothing reads this slot any more, drop it: " + dropSlotSQL(s.Name)
	}
	return f
}

// routingNames returns the routing columns of all the tables, each once.
func routingNames(tables []schema.Table) []string {
	var out []string
	for _, t := range tables {
		for _, col := range t.Routing() {
			if !slices.Contains(out, col) {
				out = append(out, col)
			}
		}
	}
	return out
}
