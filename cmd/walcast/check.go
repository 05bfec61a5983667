package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/walcast/walcast/cdc"
)

// errCheckFailed makes `walcast check` exit 1 after printing its report.
var errCheckFailed = errors.New("check found problems")

// runCheck diagnoses the database's setup and prints one line per finding,
// with the fix under it, then a summary. A problem makes it exit 1.
func runCheck(ctx context.Context, cfg *Config, stdout io.Writer) error {
	if cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	limit := cfg.MaxRetainedWAL
	if limit == 0 {
		limit = math.MaxInt64 // --max-retained-wal 0: no warning
	}
	findings := cdc.Check(ctx, cdc.CheckConfig{
		DatabaseURL: cfg.DatabaseURL,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Tables:      cfg.Tables,

		MaxRetainedWAL: limit,
		State:          checkState(cfg),
	})
	if problems := writeFindings(stdout, findings); problems > 0 {
		return errCheckFailed
	}
	return nil
}

// writeFindings prints the report and returns the number of problems:
//
//	ok       wal_level            logical
//	problem  replica identity     public.guarantee has REPLICA IDENTITY NOTHING
//	         fix: ALTER TABLE public.guarantee REPLICA IDENTITY FULL;
//	walcast check: 1 problem
func writeFindings(w io.Writer, findings []cdc.Finding) (problems int) {
	const levelWidth = 8 // len("problem") + 1
	checkWidth := 20
	for _, f := range findings {
		checkWidth = max(checkWidth, len(f.Check)+1)
	}
	indent := strings.Repeat(" ", levelWidth+1)
	var warnings int
	var b strings.Builder
	for _, f := range findings {
		switch f.Level {
		case cdc.LevelProblem:
			problems++
		case cdc.LevelWarning:
			warnings++
		}
		fmt.Fprintf(&b, "%-*s %-*s %s\n", levelWidth, f.Level, checkWidth, f.Check, f.Detail)
		if f.Fix != "" {
			// A fix of several steps keeps its lines under the first.
			fix := strings.ReplaceAll(f.Fix, "\n", "\n"+indent+"     ")
			fmt.Fprintf(&b, "%sfix: %s\n", indent, fix)
		}
	}
	summary := "ready"
	if problems > 0 {
		summary = plural(problems, "problem")
	}
	if warnings > 0 {
		summary += ", " + plural(warnings, "warning")
	}
	fmt.Fprintf(&b, "walcast check: %s\n", summary)
	io.WriteString(w, b.String())
	return problems
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
