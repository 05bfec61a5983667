package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/cdc"
	"github.com/walcast/walcast/pipeline"
	"github.com/walcast/walcast/schema"
)

const cmdState = "state"

const stateUsage = `usage: walcast state rebuild [flags]

  rebuild  seed the live state again from a consistent snapshot of the
           tracked tables, next to the running walcast (after raising
           --state-max-rows, or to repair it); no change is lost or repeated
`

// alsoIn lists, by command, options that apply to it besides their own
// lists: the state command reads the database and writes the Redis state,
// and check reads the state's status when given --redis-url.
var alsoIn = map[string][]string{
	cmdState: {"config", "database-url", "redis-url", "slot", "publication", "tables", "state-max-rows",
		"log-level", "log-format", "redis-timeout", "query-timeout"},
	cmdCheck: {"redis-url"},
}

// runState runs `walcast state rebuild`.
func runState(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, red *redactor) error {
	if len(args) == 0 || args[0] != "rebuild" {
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			return &usageError{fmt.Sprintf("unknown state command %q: want rebuild\n%s", args[0], stateUsage)}
		}
		return &usageError{strings.TrimRight(stateUsage, "\n")}
	}
	cfg, extra, err := parseConfig(cmdState, args[1:], getenv)
	if err != nil {
		return err
	}
	red.add(cfg)
	if len(extra) > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", extra[0])}
	}
	if cfg.DatabaseURL == "" {
		return &usageError{"--database-url (or WALCAST_DATABASE_URL, DATABASE_URL) is required"}
	}
	if cfg.RedisURL == "" {
		return &usageError{"--redis-url (or WALCAST_REDIS_URL, REDIS_URL) is required: the state to rebuild is in Redis (with the in-process bus, restarting walcast run seeds it)"}
	}
	if cfg.StateMaxRows == 0 {
		return &usageError{"--state-max-rows 0 turns live state off: there is no state to rebuild"}
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	// The limit is applied while the rows load: give the one capture runs
	// with, or a table above the default is turned off again.
	bus, err := broadcast.NewRedisBus(broadcast.RedisConfig{URL: cfg.RedisURL, Logger: log, Timeout: cfg.Transport.RedisTimeout,
		StateMaxRows: stateMaxRows(cfg.StateMaxRows)})
	if err != nil {
		return &usageError{"--redis-url: " + err.Error()}
	}
	defer bus.Close()
	if err := bus.Check(ctx); err != nil {
		return fmt.Errorf("check redis: %w", err)
	}
	router := schema.NewRouter(cfg.Tables)
	res, err := cdc.Rebuild(ctx, cdc.Config{
		DatabaseURL:  cfg.DatabaseURL,
		Slot:         cfg.Slot,
		Publication:  cfg.Publication,
		Tables:       cfg.Tables,
		Logger:       log,
		Transport:    cfg.Transport.TCP,
		QueryTimeout: cfg.Transport.QueryTimeout,
		OnKeys:       router.SetKeys,
	}, newSeeder(router, bus))
	if err != nil {
		return fmt.Errorf("rebuild the live state: %w", err)
	}
	fmt.Fprintf(stdout, "rebuilt the live state: %d rows of %d tables (%s) at %s in %s\n",
		res.Rows, len(res.Tables), strings.Join(res.Tables, ", "), res.At, res.Took.Round(time.Millisecond))
	return nil
}

// stateBus is a bus with a live state.
type stateBus interface {
	pipeline.StateBus
	StateInfo(ctx context.Context) (broadcast.StateStatus, error)
}

// stateLoader returns capture's StateLoader over bus, or nil when
// --state-max-rows 0 turns live state off.
func stateLoader(cfg *Config, router *schema.Router, bus stateBus) cdc.StateLoader {
	if cfg.StateMaxRows == 0 {
		return nil
	}
	return newSeeder(router, bus)
}

// newSeeder returns capture's StateLoader over bus, routing with router
// (the sink's, so that a seeded row is the message its insert makes).
func newSeeder(router *schema.Router, bus stateBus) *pipeline.Seeder {
	return pipeline.NewSeeder(router, bus, func(ctx context.Context) (bool, error) {
		st, err := bus.StateInfo(ctx)
		return st.Ready, err
	})
}

// checkState returns what `walcast check` reads the live state with: the
// Redis bus's status, when --redis-url is given (the in-process bus's
// state lives and dies with its process, seeded at every start).
func checkState(cfg *Config) func(ctx context.Context) (cdc.StateReport, error) {
	if cfg.RedisURL == "" {
		return nil
	}
	return func(ctx context.Context) (cdc.StateReport, error) {
		bus, err := broadcast.NewRedisBus(broadcast.RedisConfig{URL: cfg.RedisURL, Timeout: cfg.Transport.RedisTimeout})
		if err != nil {
			return cdc.StateReport{}, err
		}
		defer bus.Close()
		st, err := bus.StateInfo(ctx)
		if err != nil {
			return cdc.StateReport{}, err
		}
		rep := cdc.StateReport{Ready: st.Ready, Floor: st.Floor, Tables: make(map[string]cdc.TableReport, len(st.Tables))}
		for name, ts := range st.Tables {
			rep.Tables[name] = cdc.TableReport{Rows: ts.Rows, Bytes: ts.Bytes, Off: ts.Off, Reason: ts.Reason}
		}
		return rep, nil
	}
}
