package main

import (
	"context"
	"errors"
	"strconv"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/schema"
)

// The lineage check and --new-epoch: capture refuses to stream from a
// database whose history does not continue the bus's (see cdc/lineage.go)
// unless --new-epoch says to discard the bus's history and start over.
//
// Refusing is the default because the divergence is rare and only a human
// knows which side is right: a restore or failover the operator meant, or
// walcast pointed at the wrong database (two deployments sharing one Redis
// would otherwise take turns wiping each other's history). The fix is one
// restart with --new-epoch; an operator who prefers availability over that
// pause sets it permanently, and a failover then costs every client one
// resync_required, never a silent loss.

func init() {
	options = append(options, option{
		flag: "new-epoch", env: []string{"WALCAST_NEW_EPOCH"}, def: "false", boolean: true,
		help: "when the database's history does not continue the stored one (restore, PITR, failover without the slot, another cluster), discard the stored history and start a new epoch (every client gets resync_required) instead of refusing to start",
		in:   []string{cmdRun, cmdCapture},
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("want true or false")
			}
			c.NewEpoch = b
			return nil
		},
	})
}

// lineageBus is a bus that records the origin of its history.
type lineageBus interface {
	cdc.Lineage
}

// epochLineage is the bus's lineage as capture sees it: a new epoch also
// resets what the dashboards know of the bus's newest position, since ids
// start over.
type epochLineage struct {
	lineageBus
	dash *dashSink // nil when dashboards are off
}

// NewEpoch starts a new epoch on the bus and the dashboards.
func (l epochLineage) NewEpoch(ctx context.Context, o schema.Origin, reason string) error {
	if l.dash != nil {
		l.dash.mu.Lock()
		defer l.dash.mu.Unlock()
	}
	if err := l.lineageBus.NewEpoch(ctx, o, reason); err != nil {
		return err
	}
	if l.dash != nil {
		l.dash.top, l.dash.lastChange, l.dash.complete = schema.Position{}, schema.Position{}, false
	}
	return nil
}
