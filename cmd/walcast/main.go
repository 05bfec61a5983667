// Command walcast streams committed row changes of the election tables
// from PostgreSQL's logical replication to browsers over WebSocket.
//
// Usage: walcast run|capture|serve|check|slot|state|token|demo|version [flags]
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
)

const topUsage = `usage: walcast <command> [flags]

commands:
  run       capture changes and serve them over WebSocket in one process
  capture   capture changes into Redis (no /ws); pair with serve
  serve     serve changes from Redis over WebSocket
  check     diagnose the database setup and print the fix for each problem
  slot      show the replication slot (slot status) or drop it (slot drop --yes)
  state     rebuild the live state from a consistent snapshot (state rebuild)
  token     mint a development access token
  demo      everything on one machine for a first look
  version   print the version

walcast <command> -h lists the command's flags.
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr, envOS))
}

// realMain runs a command and returns the exit status: 0, 1 for a failure,
// 2 for bad usage.
func realMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return realMainContext(ctx, args, stdout, stderr, getenv)
}

// realMainContext is realMain until ctx ends (tests end it).
func realMainContext(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	// Whatever is written (logs, errors, reports) passes through the
	// redactor, which learns the configured secrets once they are parsed.
	red := &redactor{}
	stdout, stderr = red.writer(stdout), red.writer(stderr)
	err := dispatch(ctx, args[0], args[1:], stdout, stderr, getenv, red)
	var ue *usageError
	var se *cdc.SetupError
	var be *broadcast.BusError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "walcast %s: %s\n", args[0], ue.msg)
		return 2
	case errors.As(err, &se) && se.Config:
		fmt.Fprintf(stderr, "walcast %s: config: %s\n  fix: %s\n", args[0], se.Problem, se.Fix)
		return 2
	case errors.As(err, &se):
		// A fix of several steps keeps its lines under the first.
		fmt.Fprintf(stderr, "walcast %s: database setup: %s\n  fix: %s\n", args[0], se.Problem, strings.ReplaceAll(se.Fix, "\n", "\n       "))
		return 1
	case errors.As(err, &be):
		fmt.Fprintf(stderr, "walcast %s: redis: %s\n  fix: %s\n", args[0], be.Problem, be.Fix)
		return 1
	case errors.Is(err, errCheckFailed):
		return 1
	default:
		fmt.Fprintf(stderr, "walcast %s: %v\n", args[0], err)
		return 1
	}
}

func dispatch(ctx context.Context, command string, args []string, stdout, stderr io.Writer, getenv func(string) string, red *redactor) error {
	switch command {
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, topUsage)
		return nil
	case cmdSlot:
		return runSlot(ctx, args, stdout, getenv)
	case cmdState:
		return runState(ctx, args, stdout, stderr, getenv, red)
	case cmdRun, cmdCheck, cmdToken, cmdDemo, cmdCapture, cmdServe:
	default:
		return &usageError{fmt.Sprintf("unknown command %q\n%s", command, topUsage)}
	}
	cfg, rest, err := parseConfig(command, args, getenv)
	if err != nil {
		return err
	}
	red.add(cfg)
	switch command {
	case cmdRun, cmdCapture, cmdServe:
		if len(rest) > 0 {
			return &usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
		}
		log, err := newLogger(cfg, stderr)
		if err != nil {
			return err
		}
		// Process-wide (see memlimit.go): here, not in App, which tests
		// run several of in one process.
		stopGovernor := startMemoryGovernor(ctx, log, getenv)
		defer stopGovernor()
		return NewApp(command, cfg, log).Run(ctx)
	case cmdCheck:
		return runCheck(ctx, cfg, stdout)
	case cmdToken:
		return runToken(cfg, rest, stdout)
	case cmdDemo:
		return runDemo(ctx, cfg, stdout, stderr)
	}
	return nil
}

func newLogger(cfg *Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, &usageError{"--log-level: " + err.Error()}
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// runToken mints a development access token:
// walcast token [--jwt-secret S] [user_id] [role] [committees,comma,separated] [ttl]
func runToken(cfg *Config, args []string, stdout io.Writer) error {
	if cfg.JWTSecret == "" {
		return &usageError{"--jwt-secret (or WALCAST_JWT_SECRET) is required to sign a token"}
	}
	user := int64(1)
	role := "admin"
	var committees []int64
	ttl := 24 * time.Hour
	if len(args) > 4 {
		return &usageError{"usage: walcast token [user_id] [role] [committee,ids] [ttl]"}
	}
	if len(args) > 0 {
		n, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil {
			return &usageError{fmt.Sprintf("user_id %q is not an integer", args[0])}
		}
		user = n
	}
	if len(args) > 1 {
		role = args[1]
	}
	if len(args) > 2 && args[2] != "" {
		for _, s := range strings.Split(args[2], ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				return &usageError{fmt.Sprintf("committee id %q is not an integer", s)}
			}
			committees = append(committees, n)
		}
	}
	if len(args) > 3 {
		d, err := time.ParseDuration(args[3])
		if err != nil || d <= 0 {
			return &usageError{fmt.Sprintf("ttl %q is not a positive duration like 1h", args[3])}
		}
		ttl = d
	}
	tok, err := broadcast.MintToken([]byte(cfg.JWTSecret), user, role, committees, ttl)
	if err != nil {
		return fmt.Errorf("sign token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
