package main

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// errCheckFailed makes `walcast check` exit 1 after printing its report.
var errCheckFailed = errors.New("check found problems")

func runCheck(ctx context.Context, cfg *Config, stdout io.Writer) error {
	if cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	fmt.Fprintln(stdout, "walcast check: not implemented yet")
	return nil
}
