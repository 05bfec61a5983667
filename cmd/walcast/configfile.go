package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/walcast/walcast/schema"
)

// The config file (--config, WALCAST_CONFIG) is YAML: its top-level keys
// are the flags' names (database-url, listen, ...), and tables is either
// --tables' short form or a list of tables with their columns (see
// docs/configuration.md). Precedence, lowest first: default, file,
// environment, flag. One file serves every command: a key of an option
// the command does not use is ignored, an unknown key is an error.

// fileConfig is a parsed config file.
type fileConfig struct {
	path   string
	values map[string]fileValue // by option flag
	// tables is the tables list in its long form; nil when the file gives
	// none or the short form (then in values).
	tables []schema.Table
}

// fileValue is one scalar setting and the line it is on.
type fileValue struct {
	v    string
	line int
}

// configPath finds the config file's path before the flags are parsed: the
// file's values go under the environment's and the flags'.
func configPath(args []string, getenv func(string) string) string {
	path := getenv("WALCAST_CONFIG")
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasVal {
			path = val
		} else if i+1 < len(args) {
			path = args[i+1]
			i++
		}
	}
	return path
}

// fileError is a problem in the config file: where, what, and the fix.
func fileError(path string, line int, format string, a ...any) error {
	return &usageError{fmt.Sprintf("%s:%d: %s", path, line, fmt.Sprintf(format, a...))}
}

// loadConfigFile reads and parses the config file at path.
func loadConfigFile(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &usageError{fmt.Sprintf("config file: %v (fix: give --config or WALCAST_CONFIG the path of a readable YAML file)", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		// yaml's messages say "yaml: line N: what"; they do not quote
		// values, so no secret leaks through them.
		return nil, &usageError{fmt.Sprintf("%s: %s (fix: correct the YAML syntax there)", path, strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	fc := &fileConfig{path: path, values: map[string]fileValue{}}
	if len(doc.Content) == 0 {
		return fc, nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fileError(path, root.Line, "the file must be a mapping of settings (database-url: ..., tables: ...)")
	}
	known := map[string]bool{}
	for _, o := range options {
		known[o.flag] = true
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if _, dup := fc.values[key]; dup || (key == "tables" && fc.tables != nil) {
			return nil, fileError(path, k.Line, "%s is set twice (fix: keep one)", key)
		}
		switch {
		case key == "config":
			return nil, fileError(path, k.Line, "config cannot be set in the config file (fix: remove the line)")
		case !known[key]:
			return nil, fileError(path, k.Line, "unknown key %q%s (fix: correct or remove it; the keys are the flags' names, see walcast %s --help)", key, suggest(key, known), cmdRun)
		case key == "tables" && v.Kind == yaml.SequenceNode:
			t, err := parseFileTables(path, v)
			if err != nil {
				return nil, err
			}
			fc.tables = t
		default:
			s, err := scalarValue(v)
			if err != nil {
				return nil, fileError(path, v.Line, "%s: %v", key, err)
			}
			fc.values[key] = fileValue{v: s, line: v.Line}
		}
	}
	return fc, nil
}

// scalarValue returns a setting's text; a list of scalars is joined with
// commas, like the flags' comma-separated lists.
func scalarValue(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "", nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		var parts []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return "", errors.New("want a value or a list of values")
			}
			parts = append(parts, c.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", errors.New("want a value, not a mapping")
}

// tableKeys are the keys of one table in the file's tables list.
var tableKeys = map[string]bool{"table": true, "type": true, "committee": true, "owner": true, "exclude": true, "include": true, "dashboard": true}

// dashboardKeys are the keys of a table's dashboard mapping.
var dashboardKeys = map[string]bool{"status": true, "status_values": true, "attended": true, "votes": true, "electors": true}

// parseFileTables reads the long form of tables.
func parseFileTables(path string, seq *yaml.Node) ([]schema.Table, error) {
	var tables []schema.Table
	seen := map[string]int{}
	for _, n := range seq.Content {
		if n.Kind != yaml.MappingNode {
			return nil, fileError(path, n.Line, "each table is a mapping (- table: name, type: kind, ...)")
		}
		t, err := parseFileTable(path, n)
		if err != nil {
			return nil, err
		}
		if line, dup := seen[t.Qualified()]; dup {
			return nil, fileError(path, n.Line, "table %s is listed twice (also on line %d) (fix: merge the two entries)", t.Qualified(), line)
		}
		seen[t.Qualified()] = n.Line
		tables = append(tables, t)
	}
	if len(tables) == 0 {
		return nil, fileError(path, seq.Line, "tables is empty (fix: list at least one table)")
	}
	return tables, nil
}

func parseFileTable(path string, n *yaml.Node) (schema.Table, error) {
	var t schema.Table
	var typ string
	var typeLine int
	var filter schema.ColumnFilter
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !tableKeys[k.Value] {
			return t, fileError(path, k.Line, "unknown key %q in a table%s (fix: use table, type, committee, owner, exclude, include or dashboard)", k.Value, suggest(k.Value, tableKeys))
		}
		var err error
		switch k.Value {
		case "table":
			var s string
			if s, err = identValue(v); err == nil {
				t.Schema, t.Name = "public", s
				if sc, nm, ok := strings.Cut(s, "."); ok {
					t.Schema, t.Name = sc, nm
				}
				if t.Schema == "" || t.Name == "" {
					err = fmt.Errorf("%q is not a table name (schema.table or table)", s)
				}
			}
		case "type":
			typ, err = identValue(v)
			typeLine = v.Line
		case "committee":
			t.Committee, err = routingValue(v)
		case "owner":
			t.Owner, err = routingValue(v)
		case "exclude":
			filter.Exclude, err = columnList(v)
		case "include":
			filter.Include, err = columnList(v)
		case "dashboard":
			t.Dashboard, err = parseDashboard(path, v)
			if err != nil {
				return t, err
			}
		}
		if err != nil {
			return t, fileError(path, v.Line, "%s: %v", k.Value, err)
		}
	}
	if t.Name == "" {
		return t, fileError(path, n.Line, "a table without its name (fix: add table: schema.name)")
	}
	if err := resolveFileType(path, n, &t, typ, typeLine); err != nil {
		return t, err
	}
	if len(filter.Exclude) > 0 && len(filter.Include) > 0 {
		return t, fileError(path, n.Line, "table %s has both exclude and include (fix: keep one)", t.Qualified())
	}
	for _, c := range filter.Exclude {
		if slices.Contains(t.Routing(), c) {
			return t, fileError(path, n.Line, "table %s: exclude names %s, a routing column, which delivery needs (fix: remove it from exclude, or set committee/owner: none if it does not scope the rows)", t.Qualified(), c)
		}
	}
	if len(filter.Exclude)+len(filter.Include) > 0 {
		t.Columns = &filter
	}
	return t, nil
}

// resolveFileType sets t's kind, or its custom message type, from the
// table's type key (typ, at typeLine; empty: the table's name, as in
// --tables).
func resolveFileType(path string, n *yaml.Node, t *schema.Table, typ string, typeLine int) error {
	if typ == "" {
		typ = t.Name // as in --tables: a table named like a kind is of that kind
		typeLine = n.Line
		if !schema.Kind(typ).Valid() {
			return fileError(path, n.Line, "table %s has no type (fix: add type: guarantee, attendance, vote_count, election_results, or a message type of your own such as %s_update)", t.Qualified(), t.Name)
		}
	}
	if k := schema.Kind(typ); k.Valid() {
		t.Kind = k
	} else {
		switch typ {
		case schema.TypeGuarantee, schema.TypeAttendance, schema.TypeVoting, schema.TypeDashboard:
			return fileError(path, typeLine, "type %s is walcast's own message type (fix: write the kind, e.g. type: guarantee, or choose another name for a custom table)", typ)
		}
		if !messageTypeName(typ) {
			return fileError(path, typeLine, "type %q: a message type is lower-case letters, digits and underscores, such as announcement_update", typ)
		}
		t.Type = typ
		if t.Dashboard != nil {
			return fileError(path, typeLine, "table %s: dashboard columns apply only to the election kinds (fix: remove dashboard, or set type to guarantee, attendance or vote_count)", t.Qualified())
		}
	}
	return nil
}

func parseDashboard(path string, n *yaml.Node) (*schema.DashboardColumns, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fileError(path, n.Line, "dashboard: want a mapping (status: ..., attended: ..., votes: ..., electors: ...)")
	}
	d := &schema.DashboardColumns{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !dashboardKeys[k.Value] {
			return nil, fileError(path, k.Line, "unknown key %q in dashboard%s (fix: use status, status_values, attended, votes or electors)", k.Value, suggest(k.Value, dashboardKeys))
		}
		if k.Value == "status_values" {
			m, err := statusValues(path, v)
			if err != nil {
				return nil, err
			}
			d.StatusValues = m
			continue
		}
		s, err := routingValue(v)
		if err != nil {
			return nil, fileError(path, v.Line, "dashboard %s: %v", k.Value, err)
		}
		switch k.Value {
		case "status":
			d.Status = s
		case "attended":
			d.Attended = s
		case "votes":
			d.Votes = s
		case "electors":
			d.Electors = s
		}
	}
	return d, nil
}

// statusValues reads status_values: walcast's strong, medium and weak,
// each the application's value or list of values that means it
// ({strong: [HIGH, A], medium: MID, weak: LOW}), as a map from the
// application's value to walcast's.
func statusValues(path string, n *yaml.Node) (map[string]string, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fileError(path, n.Line, "status_values: want a mapping of strong, medium and weak to your values ({strong: HIGH, medium: MID, weak: LOW})")
	}
	m := map[string]string{}
	names := map[string]bool{"strong": true, "medium": true, "weak": true}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !names[k.Value] {
			return nil, fileError(path, k.Line, "unknown key %q in status_values%s (fix: use strong, medium or weak)", k.Value, suggest(k.Value, names))
		}
		vals, err := scalarList(v)
		if err != nil {
			return nil, fileError(path, v.Line, "status_values %s: %v", k.Value, err)
		}
		for _, val := range vals {
			if prev, dup := m[val]; dup {
				return nil, fileError(path, v.Line, "status_values: %q means both %s and %s (fix: keep one)", val, prev, k.Value)
			}
			m[val] = k.Value
		}
	}
	return m, nil
}

// scalarList reads one value or a list of values, kept exactly (a status
// value may hold spaces).
func scalarList(n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}, nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return nil, errors.New("want a value or a list of values")
	}
	var out []string
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
			return nil, errors.New("want a value or a list of values")
		}
		out = append(out, c.Value)
	}
	return out, nil
}

// identValue reads a name: a non-empty scalar.
func identValue(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || strings.TrimSpace(n.Value) == "" || n.Tag == "!!null" {
		return "", errors.New("want a name")
	}
	return strings.TrimSpace(n.Value), nil
}

// routingValue reads a column name, or none (schema.NoColumn).
func routingValue(n *yaml.Node) (string, error) {
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || n.Value == "none") {
		return schema.NoColumn, nil
	}
	s, err := identValue(n)
	if err != nil {
		return "", errors.New("want a column name, or none")
	}
	return s, nil
}

// columnList reads a list of column names (a YAML list, or one name).
func columnList(n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.ScalarNode {
		s, err := identValue(n)
		if err != nil {
			return nil, errors.New("want a list of column names")
		}
		return []string{s}, nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return nil, errors.New("want a list of column names")
	}
	var out []string
	for _, c := range n.Content {
		s, err := identValue(c)
		if err != nil {
			return nil, errors.New("want a list of column names")
		}
		out = append(out, s)
	}
	return out, nil
}

// suggest returns `; did you mean "x"?` for the known key nearest to key
// (a typo), or "".
func suggest(key string, known map[string]bool) string {
	best, bestD := "", 3
	for k := range known {
		if d := editDistance(key, k); d < bestD || d == bestD && best != "" && k < best {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// messageTypeName reports whether s can name a custom message type:
// lower-case letters, digits and underscores, starting with a letter, at
// most 63 bytes (what clients write in types= without escaping).
func messageTypeName(s string) bool {
	if s == "" || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
