package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxClients is the most WebSocket clients one run opens: the hard limit
// on open files here is 20,000, and the bench and walcast each need a few
// hundred more for PostgreSQL, Redis and themselves.
const maxClients = 19_000

// Config is one benchmark run.
type Config struct {
	Mode   string // live, drain, idle, xadd, serve-tier
	Bus    string // memory or redis
	Server string // walcast or minimal (the fan-out baseline)

	Target      string // ws://host:port of a running walcast; empty: start one
	DatabaseURL string
	RedisURL    string
	JWTSecret   string
	WalcastBin  string
	WalcastArgs []string
	// WalcastCmd is the walcast command the bench starts: run, or capture
	// (split mode: capture into Redis without serving; drain mode only).
	WalcastCmd string
	// Profile: write a CPU profile of the walcast child, taken from its
	// --internal-listen pprof for ProfileSeconds, to this file.
	Profile        string
	ProfileSeconds int
	// ProfileKind: cpu (pprof CPU profile) or trace (execution trace:
	// `go tool trace -pprof=net` shows where it waited on the network).
	ProfileKind string
	// HeapProfile: with Sample, write heap profiles of the walcast child
	// (its --internal-listen /debug/pprof/heap) at the end of Warmup and
	// at the end of writing, to HeapProfile-<time>.pprof each, and report
	// their top in-use allocation sites and the difference.
	HeapProfile string
	// HeapProfileRate: the walcast child's runtime.MemProfileRate (through
	// GODEBUG=memprofilerate), bytes allocated per heap-profile sample; 0
	// leaves the runtime's 512 KiB.
	HeapProfileRate int

	Clients    int
	Scope      string // admin or committee
	Committees int
	Idle       int

	Rate     float64 // changes/s; 0: flat out
	TxSize   int
	RowSize  int
	Writers  int
	Duration time.Duration
	Rows     int // drain: rows written before walcast starts

	RedisFsync string // "" or "always"
	// RedisReplicas: replicas of the bench's own Redis (for walcast's
	// --redis-min-replicas).
	RedisReplicas int
	// ServeReplicas: serve-tier mode measures each of these numbers of
	// `walcast serve` replicas in turn.
	ServeReplicas []int
	// ServeFromReplicas: the serve replicas follow the Redis replicas
	// (RedisReplicas), round-robin, instead of the primary.
	ServeFromReplicas bool
	Sample            time.Duration
	Warmup            time.Duration
	Label             string
	JSON              string
	CPUProfile        string
}

// newFlagSet binds flags to cfg with their defaults.
func newFlagSet(name string, cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Mode, "mode", "live", "live (writer + clients), drain (capture rate over a WAL backlog, with pg_recvlogical), idle (memory per idle connection), xadd (Redis baseline), serve-tier (Redis CPU and network per walcast serve replica)")
	fs.StringVar(&cfg.Bus, "bus", "redis", "memory or redis")
	fs.StringVar(&cfg.Server, "server", "walcast", "walcast, or minimal: the fan-out baseline server built into this tool")
	fs.StringVar(&cfg.Target, "target", "", "ws://127.0.0.1:PORT of a running walcast (loopback only); empty: start everything")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "with --target: the database walcast reads")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "with --target and --mode xadd: the Redis to measure")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "with --target: walcast's --jwt-secret, to mint client tokens")
	fs.StringVar(&cfg.WalcastBin, "walcast-bin", "", "walcast binary to run; empty: go build ./cmd/walcast")
	fs.Func("walcast-flags", "extra flags for the walcast child, space-separated", func(v string) error {
		cfg.WalcastArgs = strings.Fields(v)
		return nil
	})
	fs.StringVar(&cfg.WalcastCmd, "walcast-cmd", "run", "run, or capture (drain mode, --bus redis: walcast capture, the split mode's capture process)")
	fs.StringVar(&cfg.Profile, "profile", "", "write a CPU profile of the walcast child (its --internal-listen /debug/pprof/profile) to this file, taken while it works")
	fs.StringVar(&cfg.ProfileKind, "profile-kind", "cpu", "with --profile: cpu (a pprof CPU profile) or trace (an execution trace, for where walcast waits: go tool trace -pprof=net|sync|syscall)")
	fs.StringVar(&cfg.HeapProfile, "heap-profile", "", "live mode with --sample: write heap profiles of the walcast child (its --internal-listen /debug/pprof/heap) at the end of --warmup and at the end of writing, to PREFIX-<time>.pprof, and report their top in-use allocation sites and the difference")
	fs.IntVar(&cfg.HeapProfileRate, "heap-profile-rate", 0, "with --heap-profile: bytes allocated per heap-profile sample in the walcast child (GODEBUG=memprofilerate); 0: the runtime's 512 KiB, whose in-use figures for small objects are a few samples each")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 10, "with --profile: seconds profiled (live: from the start of writing; drain: from walcast's start)")
	fs.IntVar(&cfg.Clients, "clients", 100, "WebSocket clients that read every frame (serve-tier: per replica)")
	fs.StringVar(&cfg.Scope, "scope", "admin", "admin (every client gets every change) or committee (client i gets committee i % committees)")
	fs.IntVar(&cfg.Committees, "committees", 100, "committees the writer spreads rows over")
	fs.IntVar(&cfg.Idle, "idle", 0, "idle mode: connections to open")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "changes per second written; 0: flat out")
	fs.IntVar(&cfg.TxSize, "tx-size", 1, "rows per transaction")
	fs.IntVar(&cfg.RowSize, "row-size", 32, "bytes of payload per row (guarantee.notes; at least 20: it starts with the send time)")
	fs.IntVar(&cfg.Writers, "writers", 2, "writer connections")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long the writer runs (live) or the XADD loop runs per batch size (xadd)")
	fs.IntVar(&cfg.Rows, "rows", 300_000, "drain mode: rows written before walcast starts")
	fs.StringVar(&cfg.RedisFsync, "redis-fsync", "", "always: CONFIG SET appendonly yes, appendfsync always before measuring")
	fs.IntVar(&cfg.RedisReplicas, "redis-replicas", 0, "replicas started for the bench's own Redis (with --walcast-flags '--redis-min-replicas N')")
	cfg.ServeReplicas = []int{0, 1, 4, 16}
	fs.Func("serve-replicas", "serve-tier mode: comma-separated numbers of serve replicas to measure in turn (default 0,1,4,16; 0: the appends alone)", func(v string) error {
		n, err := parseIntList(v)
		cfg.ServeReplicas = n
		return err
	})
	fs.BoolVar(&cfg.ServeFromReplicas, "serve-from-replicas", false, "serve-tier mode: the serve replicas follow the Redis replicas (--redis-replicas N), round-robin, instead of the primary")
	fs.DurationVar(&cfg.Sample, "sample", 0, "live mode: sample walcast's RSS this often (the soak uses 10s)")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Minute, "with --sample: samples before this are left out of the flatness check")
	fs.StringVar(&cfg.Label, "label", "", "name of this run in reports")
	fs.StringVar(&cfg.JSON, "json", "", "write the result as JSON to this file")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write this tool's own CPU profile here (with --server minimal it covers the clients only)")
	return fs
}

// parseConfig parses and validates one run's flags.
func parseConfig(args []string) (*Config, error) {
	cfg := &Config{}
	fs := newFlagSet("walcast-bench", cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, usageErr(fs)
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

func usageErr(fs *flag.FlagSet) error {
	var b strings.Builder
	b.WriteString("usage: walcast-bench [suite|soak] [flags]\n\nflags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			return
		}
		fmt.Fprintf(&b, "  --%s (default %q)\n      %s\n", f.Name, f.DefValue, f.Usage)
	})
	return errors.New(b.String())
}

// validate checks the flags together; every message names the flag.
func (c *Config) validate() error {
	switch c.Mode {
	case "live", "drain", "idle", "xadd", "serve-tier":
	default:
		return fmt.Errorf("--mode %q: want live, drain, idle, xadd or serve-tier", c.Mode)
	}
	if c.Mode == "serve-tier" {
		if err := c.validateServeTier(); err != nil {
			return err
		}
	}
	switch c.Bus {
	case "memory", "redis":
	default:
		return fmt.Errorf("--bus %q: want memory or redis", c.Bus)
	}
	switch c.Server {
	case "walcast", "minimal":
	default:
		return fmt.Errorf("--server %q: want walcast or minimal", c.Server)
	}
	if err := c.validateWalcast(); err != nil {
		return err
	}
	if c.Server == "minimal" && c.Mode != "live" {
		return errors.New("--server minimal works with --mode live only")
	}
	switch c.Scope {
	case "admin", "committee":
	default:
		return fmt.Errorf("--scope %q: want admin or committee", c.Scope)
	}
	if c.Clients < 0 || c.Clients > maxClients {
		return fmt.Errorf("--clients %d: want 0 to %d (the open-file limit is 20,000)", c.Clients, maxClients)
	}
	if c.Idle < 0 || c.Idle > maxClients {
		return fmt.Errorf("--idle %d: want 0 to %d", c.Idle, maxClients)
	}
	if c.Mode == "idle" && c.Idle == 0 {
		return errors.New("--mode idle needs --idle N (connections to open)")
	}
	if c.Committees < 1 || c.Committees > 100_000 {
		return fmt.Errorf("--committees %d: want 1 to 100000", c.Committees)
	}
	if c.Rate < 0 || c.Rate > 10_000_000 {
		return fmt.Errorf("--rate %g: want 0 (flat out) to 10000000 changes/s", c.Rate)
	}
	if c.TxSize < 1 || c.TxSize > 100_000 {
		return fmt.Errorf("--tx-size %d: want 1 to 100000 rows", c.TxSize)
	}
	if c.RowSize < 20 || c.RowSize > 1<<20 {
		return fmt.Errorf("--row-size %d: want 20 (the send time and a colon) to 1048576 bytes", c.RowSize)
	}
	if c.Writers < 1 || c.Writers > 64 {
		return fmt.Errorf("--writers %d: want 1 to 64", c.Writers)
	}
	if c.Duration <= 0 || c.Duration > 2*time.Hour {
		return fmt.Errorf("--duration %s: want more than 0 and at most 2h", c.Duration)
	}
	if c.Rows < 1 || c.Rows > 10_000_000 {
		return fmt.Errorf("--rows %d: want 1 to 10000000", c.Rows)
	}
	if c.RedisReplicas < 0 || c.RedisReplicas > 4 {
		return fmt.Errorf("--redis-replicas %d: want 0 to 4", c.RedisReplicas)
	}
	if c.RedisFsync != "" && c.RedisFsync != "always" {
		return fmt.Errorf("--redis-fsync %q: want always or nothing", c.RedisFsync)
	}
	if c.RedisFsync != "" && c.Bus != "redis" && c.Mode != "xadd" {
		return errors.New("--redis-fsync needs --bus redis")
	}
	if c.Sample < 0 || (c.Sample > 0 && c.Sample < 100*time.Millisecond) {
		return fmt.Errorf("--sample %s: want 0 (off) or at least 100ms", c.Sample)
	}
	if c.Target != "" {
		if c.Mode == "drain" || c.Mode == "idle" {
			return fmt.Errorf("--mode %s measures a walcast this tool starts: leave out --target", c.Mode)
		}
		if c.Server == "minimal" {
			return errors.New("--server minimal starts its own server: leave out --target")
		}
		u, err := url.Parse(c.Target)
		if err != nil || u.Scheme != "ws" || u.Host == "" {
			return fmt.Errorf("--target %q: want ws://host:port", c.Target)
		}
		if !loopback(u.Hostname()) {
			return fmt.Errorf("--target %q: only loopback addresses (127.0.0.1, ::1, localhost) may be benchmarked", c.Target)
		}
		if c.JWTSecret == "" && c.Mode != "xadd" {
			return errors.New("--target needs --jwt-secret (walcast's) to mint client tokens")
		}
		if c.DatabaseURL == "" && c.Mode == "live" {
			return errors.New("--target needs --database-url for the writer")
		}
	}
	for _, s := range []struct{ flag, v string }{{"database-url", c.DatabaseURL}, {"redis-url", c.RedisURL}} {
		if s.v == "" {
			continue
		}
		u, err := url.Parse(s.v)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--%s: want a URL with a host", s.flag)
		}
		if !loopback(u.Hostname()) {
			return fmt.Errorf("--%s: only loopback hosts may be used", s.flag)
		}
	}
	if c.Mode == "xadd" && c.Target != "" && c.RedisURL == "" {
		return errors.New("--mode xadd with --target needs --redis-url")
	}
	return nil
}

// validateWalcast checks the flags about the walcast child itself.
func (c *Config) validateWalcast() error {
	switch c.WalcastCmd {
	case "run":
	case "capture":
		if c.Mode != "drain" || c.Bus != "redis" {
			return errors.New("--walcast-cmd capture measures capture into Redis: it needs --mode drain and --bus redis")
		}
	default:
		return fmt.Errorf("--walcast-cmd %q: want run or capture", c.WalcastCmd)
	}
	if c.Profile != "" && (c.Server != "walcast" || c.Target != "" || (c.Mode != "live" && c.Mode != "drain")) {
		return errors.New("--profile profiles a walcast child this tool starts: --mode live or drain, without --server minimal or --target")
	}
	if c.HeapProfile != "" && (c.Server != "walcast" || c.Target != "" || c.Mode != "live" || c.Sample <= 0) {
		return errors.New("--heap-profile profiles a walcast child this tool starts while it samples: --mode live with --sample, without --server minimal or --target")
	}
	if c.HeapProfileRate < 0 || (c.HeapProfileRate > 0 && c.HeapProfile == "") {
		return errors.New("--heap-profile-rate: want a positive number of bytes, with --heap-profile")
	}
	if c.ProfileKind != "cpu" && c.ProfileKind != "trace" {
		return fmt.Errorf("--profile-kind %q: want cpu or trace", c.ProfileKind)
	}
	if c.ProfileSeconds < 1 || c.ProfileSeconds > 600 {
		return fmt.Errorf("--profile-seconds %d: want 1 to 600", c.ProfileSeconds)
	}
	return nil
}

// validateServeTier checks what serve-tier mode needs on top of the rest.
func (c *Config) validateServeTier() error {
	if c.Bus != "redis" || c.Server != "walcast" || c.Target != "" {
		return errors.New("--mode serve-tier starts its own walcast serve replicas on Redis: leave out --bus memory, --server and --target")
	}
	if len(c.ServeReplicas) == 0 {
		return errors.New("--serve-replicas: want at least one number")
	}
	for _, n := range c.ServeReplicas {
		if n < 0 || n > 64 {
			return fmt.Errorf("--serve-replicas %d: want 0 to 64", n)
		}
		if n*c.Clients > maxClients {
			return fmt.Errorf("--serve-replicas %d with --clients %d per replica: more than %d clients", n, c.Clients, maxClients)
		}
	}
	if c.Rate == 0 {
		return errors.New("--mode serve-tier needs a fixed --rate (changes/s)")
	}
	if c.ServeFromReplicas && (c.RedisReplicas == 0 || c.RedisURL != "") {
		return errors.New("--serve-from-replicas needs --redis-replicas N, without --redis-url (the bench starts the replicas)")
	}
	return nil
}

// parseIntList reads "1,4,16".
func parseIntList(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
