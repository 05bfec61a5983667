package cdc

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/walcast/walcast/schema"
)

// CheckState is the check's name for the live state's findings.
const CheckState = "live state"

// StateReport is what the bus says of its live state, for Check.
type StateReport struct {
	Ready  bool            // a complete state exists
	Floor  schema.Position // the position of the snapshot it was seeded from
	Tables map[string]TableReport
}

// TableReport is one table's part of the live state.
type TableReport struct {
	Rows, Bytes int64
	Off         bool   // dropped: over --state-max-rows, or state off
	Reason      string // why it is off
}

// rebuildFix is the fix of a missing or incomplete live state.
const rebuildFix = "walcast state rebuild (with the --database-url, --redis-url and --tables of capture) while walcast runs; or restart walcast capture, which seeds a state that is not ready"

// noKeyFinding is the finding of a tracked table without a primary key:
// it has no live state.
func noKeyFinding(t schema.Table, quoted string) Finding {
	return Finding{Check: CheckState, Level: LevelWarning,
		Detail: t.Qualified() + " has no primary key: it has no live state (a sync sends none of its rows; its changes still stream)",
		Fix:    "ALTER TABLE " + quoted + " ADD PRIMARY KEY (...); then walcast state rebuild"}
}

// state judges the live state the bus reports (CheckConfig.State): not
// seeded, seeded without some table, or a table turned off.
func (c *checker) state(ctx context.Context) {
	if c.cfg.State == nil {
		return
	}
	st, err := c.cfg.State(ctx)
	if err != nil {
		c.add(Finding{Check: CheckState, Level: LevelProblem, Detail: "cannot read the live state from Redis: " + err.Error(),
			Fix: "check --redis-url and that Redis answers"})
		return
	}
	if !st.Ready {
		c.add(Finding{Check: CheckState, Level: LevelWarning,
			Detail: "the live state is missing or incomplete (never seeded, or seeding was interrupted): a sync reports every table unavailable",
			Fix:    rebuildFix})
		return
	}
	var missing, off []string
	var rows int64
	for _, ti := range c.tableInfo {
		if !ti.exists || !ti.hasPK {
			continue
		}
		ts, ok := st.Tables[ti.table.Qualified()]
		switch {
		case !ok:
			missing = append(missing, ti.table.Qualified())
		case ts.Off:
			off = append(off, ti.table.Qualified()+" ("+ts.Reason+")")
		default:
			rows += ts.Rows
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		c.add(Finding{Check: CheckState, Level: LevelWarning,
			Detail: "the live state holds no rows of " + strings.Join(missing, ", ") + " (tracked since the state was seeded)",
			Fix:    rebuildFix})
	}
	if len(off) > 0 {
		c.add(Finding{Check: CheckState, Level: LevelWarning,
			Detail: "the live state is off for " + strings.Join(off, ", "),
			Fix:    "raise --state-max-rows above the table's rows and restart walcast capture, then walcast state rebuild"})
	}
	if len(missing) == 0 && len(off) == 0 {
		c.add(Finding{Check: CheckState, Level: LevelOK,
			Detail: fmt.Sprintf("ready: %d rows, seeded at %s", rows, st.Floor)})
	}
}
