package main

import (
	"context"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/pipeline"
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

// lineageBus is a bus that records the origin of its history (embedded
// under this name: cdc.Lineage's own name is one of its methods).
type lineageBus interface {
	cdc.Lineage
}

// epochLineage is the bus's lineage as capture sees it: a new epoch also
// resets what the dashboards know of the bus's newest position, since ids
// start over.
type epochLineage struct {
	lineageBus
	dash *pipeline.Dashboards // nil when dashboards are off
}

// NewEpoch starts a new epoch on the bus and the dashboards.
func (l epochLineage) NewEpoch(ctx context.Context, o schema.Origin, reason string) error {
	return l.dash.NewEpoch(func() error { return l.lineageBus.NewEpoch(ctx, o, reason) })
}
