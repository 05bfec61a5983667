package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/schema"
)

const slotUsage = `usage: walcast slot status [flags]
       walcast slot drop --yes [flags]

  status  show the replication slot: holder, positions, the WAL it retains
  drop    drop the replication slot (refused while a process reads it)

  --yes   confirm the drop: changes made until capture creates a new slot
          are never delivered
`

// slotTimeout bounds a slot command, so that an unreachable database is an
// error rather than a hang.
const slotTimeout = 30 * time.Second

// runSlot runs `walcast slot status|drop`.
func runSlot(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return &usageError{strings.TrimRight(slotUsage+slotFlags(), "\n")}
	}
	sub, args := args[0], args[1:]
	yes := false
	var rest []string
	for _, a := range args {
		switch a {
		case "-yes", "--yes", "-yes=true", "--yes=true":
			yes = true
		case "-yes=false", "--yes=false":
			yes = false
		default:
			rest = append(rest, a)
		}
	}
	if sub != "status" && sub != "drop" {
		return &usageError{fmt.Sprintf("unknown slot command %q: want status or drop\n%s", sub, slotUsage)}
	}
	if yes && sub != "drop" {
		return &usageError{"--yes only applies to walcast slot drop"}
	}
	cfg, extra, err := parseConfig(cmdSlot, rest, getenv)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) && strings.HasPrefix(ue.msg, "usage:") {
			return &usageError{strings.TrimRight(slotUsage+slotFlags(), "\n")}
		}
		return err
	}
	if len(extra) > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", extra[0])}
	}
	if cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	ctx, cancel := context.WithTimeout(ctx, slotTimeout)
	defer cancel()
	if sub == "status" {
		return slotStatus(ctx, cfg, stdout)
	}
	if !yes {
		return &usageError{fmt.Sprintf("not dropping replication slot %s without --yes: changes committed until walcast creates a new slot are never delivered; run walcast slot drop --slot %s --yes", cfg.Slot, cfg.Slot)}
	}
	return slotDrop(ctx, cfg, stdout)
}

func slotFlags() string {
	var mine []*option
	for i := range options {
		if options[i].appliesTo(cmdSlot) {
			mine = append(mine, &options[i])
		}
	}
	u := usage(cmdSlot, mine)
	return u[strings.Index(u, "\n")+1:] // without usage's own first line
}

func slotStatus(ctx context.Context, cfg *Config, stdout io.Writer) error {
	s, err := cdc.SlotStatus(ctx, cfg.DatabaseURL, cfg.Slot)
	if errors.Is(err, cdc.ErrNoSlot) {
		return fmt.Errorf("replication slot %s does not exist (walcast run or capture creates it on start)", cfg.Slot)
	}
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("slot", s.Name)
	if s.Type == "logical" {
		row("plugin", s.Plugin)
		row("database", s.Database)
	} else {
		row("type", s.Type)
	}
	if s.ActivePID != 0 {
		row("active", fmt.Sprintf("yes, PID %d (%s)", s.ActivePID, s.Holder))
	} else {
		row("active", "no: nobody reads it, and the WAL it retains grows")
	}
	row("confirmed_flush_lsn", lsnOrNone(s.ConfirmedFlushLSN))
	row("restart_lsn", lsnOrNone(s.RestartLSN))
	if s.RetainedWAL >= 0 {
		row("retained WAL", s.RetainedWALPretty)
	} else {
		row("retained WAL", "unknown")
	}
	row("wal_status", s.WALStatus)
	switch {
	case s.SafeWALSize >= 0:
		row("safe_wal_size", s.SafeWALSizePretty+" more before PostgreSQL invalidates the slot")
	case s.SafeWALSize != cdc.NoWALLimit:
		row("safe_wal_size", s.SafeWALSizePretty+": past max_slot_wal_keep_size, lost at the next checkpoint")
	case s.WALStatus == "lost":
		row("safe_wal_size", "none: the slot is lost")
	default:
		row("safe_wal_size", "unlimited (max_slot_wal_keep_size = -1)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if s.WALStatus == "lost" {
		fmt.Fprintf(stdout, "\nThe slot is lost: changes were lost. Drop it (walcast slot drop --slot %s --yes), restart walcast once with --new-epoch, and have clients refetch.\n", s.Name)
	}
	return nil
}

func lsnOrNone(lsn uint64) string {
	if lsn == 0 {
		return "none"
	}
	return pglogrepl.LSN(lsn).String()
}

func slotDrop(ctx context.Context, cfg *Config, stdout io.Writer) error {
	err := cdc.DropSlot(ctx, cfg.DatabaseURL, cfg.Slot)
	var active *cdc.SlotActiveError
	switch {
	case errors.As(err, &active):
		return fmt.Errorf("not dropping replication slot %s: it is in use by PID %d (%s); stop that walcast first", cfg.Slot, active.PID, active.Holder)
	case errors.Is(err, cdc.ErrNoSlot):
		return fmt.Errorf("replication slot %s does not exist", cfg.Slot)
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "dropped replication slot %s\n", cfg.Slot)
	fmt.Fprintf(stdout, "the publication is left in place; to remove it too: DROP PUBLICATION %s;\n", schema.QuoteIdent(cfg.Publication))
	return nil
}
