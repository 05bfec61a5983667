package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/dashboard"
	"github.com/walcast/walcast/schema"
)

// Config is walcast's configuration, from flags and environment variables.
type Config struct {
	DatabaseURL    string
	RedisURL       string
	Listen         string
	JWTSecret      string
	JWTPublicKey   string
	JWTIssuer      string
	JWTAudience    string
	Slot           string
	Publication    string
	Tables         []schema.Table
	AllowedOrigins []string
	History        int
	ClientWindow   int
	MaxConns       int
	MaxConnsUser   int
	ConnectRate    float64
	LogLevel       string
	LogFormat      string
	Live           liveConfig // dashboards and presence: see live.go
	Net            netConfig  // listeners: see listeners.go

	// StateMaxRows: rows of live state kept per table (0: no live state).
	StateMaxRows int

	HeartbeatInterval time.Duration
	StallThreshold    time.Duration
	MaxRetainedWAL    int64
	// NewEpoch: on a database whose history does not continue the bus's,
	// start a new epoch instead of refusing (see epoch.go).
	NewEpoch bool

	Transport transportConfig // connection timeouts: see transport.go

	// ConfigFile is the config file read (--config), "" for none.
	ConfigFile string
}

// option is one configuration setting: its flag, its environment variables
// (first set wins) and its default. The table is the single source of the
// flags, their documentation, and the docs test.
type option struct {
	flag string
	env  []string
	def  string
	help string
	// in lists the commands the option applies to.
	in  []string
	set func(c *Config, v string) error
	// boolean: the flag may be given without a value (--name means true).
	boolean bool
}

var (
	cmdRun     = "run"
	cmdCapture = "capture"
	cmdServe   = "serve"
	cmdCheck   = "check"
	cmdToken   = "token"
	cmdDemo    = "demo"
	cmdSlot    = "slot"
)

var options = []option{
	{
		flag: "config", env: []string{"WALCAST_CONFIG"},
		help: "YAML config file holding any of these settings and the tracked tables with their columns (docs/configuration.md); the environment and flags override it",
		in:   []string{cmdRun, cmdCapture, cmdServe, cmdCheck, cmdToken},
		set:  func(c *Config, v string) error { c.ConfigFile = v; return nil },
	},
	{
		flag: "database-url", env: []string{"WALCAST_DATABASE_URL", "DATABASE_URL"},
		help: "libpq URL of the source database",
		in:   []string{cmdRun, cmdCapture, cmdCheck, cmdSlot},
		set:  func(c *Config, v string) error { c.DatabaseURL = v; return nil },
	},
	{
		flag: "redis-url", env: []string{"WALCAST_REDIS_URL", "REDIS_URL"},
		help: "Redis URL for the Redis Streams bus; empty: in-process bus (run only)",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set: func(c *Config, v string) error {
			if v == "" {
				c.RedisURL = ""
				return nil
			}
			if broadcast.IsClusterURL(v) {
				if _, err := broadcast.ParseClusterURL(v); err != nil {
					return err
				}
				c.RedisURL = v
				return nil
			}
			if broadcast.IsSentinelURL(v) {
				if err := broadcast.CheckRedisURL(v); err != nil {
					return fmt.Errorf("%w; want redis-sentinel://[user:password@]host1:port1,host2:port2/<master-name>[/db][?sentinel_password=…]", err)
				}
				c.RedisURL = v
				return nil
			}
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
				return errors.New("want redis://[user:password@]host:port[/db], rediss://, unix://, redis-cluster://host:port,host:port or redis-sentinel://host1:port1,host2:port2/<master-name>")
			}
			if _, err := redis.ParseURL(v); err != nil {
				return err
			}
			c.RedisURL = v
			return nil
		},
	},
	{
		flag: "listen", env: []string{"WALCAST_LISTEN"}, def: ":8080",
		help: "HTTP address for /ws, /healthz, /readyz, /metrics and the live page at /",
		in:   []string{cmdRun, cmdCapture, cmdServe, cmdDemo},
		set:  func(c *Config, v string) error { c.Listen = v; return nil },
	},
	{
		flag: "jwt-secret", env: []string{"WALCAST_JWT_SECRET"},
		help: "HS256 key for access tokens (a Django SECRET_KEY works)",
		in:   []string{cmdRun, cmdServe, cmdToken},
		set:  func(c *Config, v string) error { c.JWTSecret = v; return nil },
	},
	{
		flag: "jwt-public-key", env: []string{"WALCAST_JWT_PUBLIC_KEY"},
		help: "PEM file with the public key for RS256/ES256 access tokens",
		in:   []string{cmdRun, cmdServe},
		set:  func(c *Config, v string) error { c.JWTPublicKey = v; return nil },
	},
	{
		flag: "jwt-issuer", env: []string{"WALCAST_JWT_ISSUER"},
		help: "when set, tokens must carry this iss claim",
		in:   []string{cmdRun, cmdServe},
		set:  func(c *Config, v string) error { c.JWTIssuer = v; return nil },
	},
	{
		flag: "jwt-audience", env: []string{"WALCAST_JWT_AUDIENCE"},
		help: "when set, tokens must carry this aud claim",
		in:   []string{cmdRun, cmdServe},
		set:  func(c *Config, v string) error { c.JWTAudience = v; return nil },
	},
	{
		flag: "slot", env: []string{"WALCAST_SLOT"}, def: "walcast",
		help: "replication slot name (created if missing)",
		in:   []string{cmdRun, cmdCapture, cmdCheck, cmdSlot},
		set: func(c *Config, v string) error {
			if !validIdent(v) {
				return errors.New("want lower-case letters, digits and underscores (PostgreSQL's rule for slot names)")
			}
			c.Slot = v
			return nil
		},
	},
	{
		flag: "publication", env: []string{"WALCAST_PUBLICATION"}, def: "walcast",
		help: "publication name (created if missing)",
		in:   []string{cmdRun, cmdCapture, cmdCheck, cmdSlot},
		set: func(c *Config, v string) error {
			// Any name is taken exactly as given (quoted wherever walcast
			// writes it); only what PostgreSQL would alter is refused.
			switch {
			case v == "":
				return errors.New("must not be empty")
			case len(v) > maxIdentBytes:
				return fmt.Errorf("%d bytes is too long: PostgreSQL truncates names to %d bytes", len(v), maxIdentBytes)
			case strings.ContainsRune(v, 0):
				return errors.New("must not contain a NUL byte")
			}
			c.Publication = v
			return nil
		},
	},
	{
		flag: "tables", env: []string{"WALCAST_TABLES"}, def: schema.DefaultTables,
		help: "tracked tables; name=kind maps a differently named table to one of guarantee, attendance, vote_count, election_results (the config file's tables list also names columns); serve reads it for the custom message types subscriptions may name",
		in:   []string{cmdRun, cmdCapture, cmdCheck, cmdServe},
		set: func(c *Config, v string) error {
			t, err := schema.ParseTables(v)
			c.Tables = t
			return err
		},
	},
	{
		flag: "allowed-origins", env: []string{"WALCAST_ALLOWED_ORIGINS"},
		help: "comma-separated browser origins allowed to open /ws (patterns like https://app.example.com, *.example.com); empty: same origin only",
		in:   []string{cmdRun, cmdServe},
		set: func(c *Config, v string) error {
			c.AllowedOrigins = nil
			for _, o := range strings.Split(v, ",") {
				if o = strings.TrimSpace(o); o != "" {
					c.AllowedOrigins = append(c.AllowedOrigins, o)
				}
			}
			return nil
		},
	},
	{
		flag: "history", env: []string{"WALCAST_HISTORY"}, def: "100000",
		help: "messages kept for resume",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  intSetter(1, math.MaxInt, "want a positive integer", func(c *Config, n int) { c.History = n }),
	},
	{
		flag: "state-max-rows", env: []string{"WALCAST_STATE_MAX_ROWS"}, def: "1000000",
		help: "rows of live state (for sync) kept per table; above it the table's state is dropped and sync reports it unavailable; 0 disables live state",
		in:   []string{cmdRun, cmdCapture},
		set:  intSetter(0, math.MaxInt, "want a non-negative integer", func(c *Config, n int) { c.StateMaxRows = n }),
	},
	{
		flag: "client-window", env: []string{"WALCAST_CLIENT_WINDOW"}, def: "65536",
		help: "messages a client may fall behind before it is closed with 4008 and resumes from its last id",
		in:   []string{cmdRun, cmdServe},
		set:  intSetter(16, math.MaxInt, "want an integer of at least 16", func(c *Config, n int) { c.ClientWindow = n }),
	},
	{
		flag: "max-connections", env: []string{"WALCAST_MAX_CONNECTIONS"}, def: "20000",
		help: "WebSocket connections this process accepts in total (HTTP 503 beyond)",
		in:   []string{cmdRun, cmdServe},
		set:  intSetter(1, math.MaxInt, "want a positive integer", func(c *Config, n int) { c.MaxConns = n }),
	},
	{
		flag: "max-connections-per-user", env: []string{"WALCAST_MAX_CONNECTIONS_PER_USER"}, def: "32",
		help: "WebSocket connections one user_id may hold (HTTP 429 beyond)",
		in:   []string{cmdRun, cmdServe},
		set:  intSetter(1, math.MaxInt, "want a positive integer", func(c *Config, n int) { c.MaxConnsUser = n }),
	},
	{
		flag: "connect-rate", env: []string{"WALCAST_CONNECT_RATE"}, def: "20",
		help: "new WebSocket connections per second per client IP, with bursts of twice as many (HTTP 429 beyond)",
		in:   []string{cmdRun, cmdServe},
		set: func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return errors.New("want a positive number")
			}
			c.ConnectRate = f
			return nil
		},
	},
	{
		flag: "heartbeat-interval", env: []string{"WALCAST_HEARTBEAT_INTERVAL"}, def: "10s",
		help: "how often capture writes a heartbeat into the WAL (PostgreSQL 14+) and reads the WAL its slot retains; 0 turns heartbeats off",
		in:   []string{cmdRun, cmdCapture},
		set: func(c *Config, v string) error {
			d, err := parseOptionalDuration(v)
			c.HeartbeatInterval = d
			return err
		},
	},
	{
		flag: "stall-threshold", env: []string{"WALCAST_STALL_THRESHOLD"}, def: "60s",
		help: "a heartbeat not back within this long is a stall: /readyz turns red and an error is logged; 0 turns stall detection off",
		in:   []string{cmdRun, cmdCapture},
		set: func(c *Config, v string) error {
			d, err := parseOptionalDuration(v)
			c.StallThreshold = d
			return err
		},
	},
	{
		flag: "max-retained-wal", env: []string{"WALCAST_MAX_RETAINED_WAL"}, def: "1GB",
		help: "warn when the replication slot holds back more WAL than this (512MB, 2GB; 1024-based like PostgreSQL); 0 turns the warning off",
		in:   []string{cmdRun, cmdCapture, cmdCheck},
		set: func(c *Config, v string) error {
			n, err := parseSize(v)
			c.MaxRetainedWAL = n
			return err
		},
	},
	{
		flag: "log-level", env: []string{"WALCAST_LOG_LEVEL"}, def: "info",
		help: "debug, info, warn or error",
		in:   []string{cmdRun, cmdCapture, cmdServe, cmdDemo},
		set: func(c *Config, v string) error {
			switch v {
			case "debug", "info", "warn", "error":
				c.LogLevel = v
				return nil
			}
			return errors.New("want debug, info, warn or error")
		},
	},
	{
		flag: "log-format", env: []string{"WALCAST_LOG_FORMAT"}, def: "text",
		help: "text or json",
		in:   []string{cmdRun, cmdCapture, cmdServe, cmdDemo},
		set: func(c *Config, v string) error {
			if v != "text" && v != "json" {
				return errors.New("want text or json")
			}
			c.LogFormat = v
			return nil
		},
	},
	{
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
	},
	{
		flag: "internal-listen", env: []string{"WALCAST_INTERNAL_LISTEN"},
		help: "address for operators only: /metrics, /healthz, /readyz with detailed reasons, /debug/pprof/; when set, --listen no longer serves /metrics; empty: no internal listener",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  func(c *Config, v string) error { c.Net.InternalListen = v; return nil },
	},
	{
		flag: "max-http-connections", env: []string{"WALCAST_MAX_HTTP_CONNECTIONS"}, def: "0",
		help: "TCP connections --listen holds open at once, WebSockets included (closed at once beyond); 0: --max-connections plus a tenth, at least 100 more",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  intSetter(0, math.MaxInt, "want a positive integer, or 0 for the default", func(c *Config, n int) { c.Net.MaxHTTPConns = n }),
	},
	{
		flag: "trusted-proxies", env: []string{"WALCAST_TRUSTED_PROXIES"},
		help: "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For gives the client address (for --connect-rate and logs); empty: the header is ignored",
		in:   []string{cmdRun, cmdServe},
		set: func(c *Config, v string) error {
			p, err := broadcast.ParseTrustedProxies(v)
			c.Net.TrustedProxies = p
			return err
		},
	},
	{
		flag: "dashboard-interval", env: []string{"WALCAST_DASHBOARD_INTERVAL"}, def: "500ms",
		help: "shortest time between two recomputations of a dashboard (dashboard_update); 0 turns dashboards off",
		in:   []string{cmdRun, cmdCapture},
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return errors.New("want a duration such as 500ms, or 0 for off")
			}
			c.Live.DashboardInterval = d
			return nil
		},
	},
	{
		flag: "dashboard-batch", env: []string{"WALCAST_DASHBOARD_BATCH"}, def: strconv.Itoa(dashboard.DefaultBatch),
		help: "most dashboards sent per --dashboard-interval; a burst (start-up, TRUNCATE: one per user and committee) is spread over later rounds, admin and committee dashboards first",
		in:   []string{cmdRun, cmdCapture},
		set:  intSetter(1, math.MaxInt, "want a positive integer", func(c *Config, n int) { c.Live.DashboardBatch = n }),
	},
	{
		flag: "presence-ttl", env: []string{"WALCAST_PRESENCE_TTL"}, def: "15s",
		help: "how long a serve replica's presence entries outlive it in Redis: a crashed replica's users disappear within about this time",
		in:   []string{cmdRun, cmdServe},
		set: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return errors.New("want a duration of at least 1s, such as 15s")
			}
			c.Live.PresenceTTL = d
			return nil
		},
	},
	{
		flag: "tcp-keepalive-idle", env: []string{"WALCAST_TCP_KEEPALIVE_IDLE"}, def: "15s",
		help: "idle time before TCP keepalive probes start on connections to PostgreSQL and Redis; 0 turns keepalive off",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  durationAtLeast(time.Second, true, func(c *Config, d time.Duration) { c.Transport.TCP.KeepAliveIdle = d }),
	},
	{
		flag: "tcp-keepalive-interval", env: []string{"WALCAST_TCP_KEEPALIVE_INTERVAL"}, def: "5s",
		help: "time between unanswered TCP keepalive probes",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  durationAtLeast(time.Second, false, func(c *Config, d time.Duration) { c.Transport.TCP.KeepAliveInterval = d }),
	},
	{
		flag: "tcp-keepalive-count", env: []string{"WALCAST_TCP_KEEPALIVE_COUNT"}, def: "3",
		help: "unanswered TCP keepalive probes that close a connection",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  intSetter(1, 127, "want an integer from 1 to 127", func(c *Config, n int) { c.Transport.TCP.KeepAliveCount = n }),
	},
	{
		flag: "tcp-user-timeout", env: []string{"WALCAST_TCP_USER_TIMEOUT"}, def: "30s",
		help: "TCP_USER_TIMEOUT (Linux): how long data sent to PostgreSQL or Redis may stay unacknowledged before the connection is closed; 0: the operating system's default (about 15 minutes)",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  durationAtLeast(time.Second, true, func(c *Config, d time.Duration) { c.Transport.TCP.UserTimeout = d }),
	},
	{
		flag: "query-timeout", env: []string{"WALCAST_QUERY_TIMEOUT"}, def: "30s",
		help: "longest wait for PostgreSQL on an ordinary connection (a setup step, a heartbeat, a dashboard round); a connection that does not answer is closed and replaced",
		in:   []string{cmdRun, cmdCapture},
		set:  durationAtLeast(100*time.Millisecond, false, func(c *Config, d time.Duration) { c.Transport.QueryTimeout = d }),
	},
	{
		flag: "redis-timeout", env: []string{"WALCAST_REDIS_TIMEOUT"}, def: "5s",
		help: "longest wait for Redis to answer a command (a blocking read waits its block time plus this); a connection that does not answer is closed and replaced",
		in:   []string{cmdRun, cmdCapture, cmdServe},
		set:  durationAtLeast(100*time.Millisecond, false, func(c *Config, d time.Duration) { c.Transport.RedisTimeout = d }),
	},
	{
		flag: "redis-min-replicas", env: []string{"WALCAST_REDIS_MIN_REPLICAS"}, def: "0",
		help: "Redis replicas that must hold an append (WAIT) before capture counts it as stored and confirms the slot; 0: the primary alone (1 recommended with replicas)",
		in:   []string{cmdRun, cmdCapture},
		set:  intSetter(0, 100, "want a number of replicas from 0 to 100", func(c *Config, n int) { c.Transport.RedisMinReplicas = n }),
	},
	{
		flag: "redis-replica-timeout", env: []string{"WALCAST_REDIS_REPLICA_TIMEOUT"}, def: "1s",
		help: "longest wait for --redis-min-replicas replicas to acknowledge an append; past it nothing is confirmed and the append is retried",
		in:   []string{cmdRun, cmdCapture},
		set:  durationAtLeast(10*time.Millisecond, false, func(c *Config, d time.Duration) { c.Transport.RedisReplicaTimeout = d }),
	},
}

// intSetter returns an option's setter for an integer from min to max;
// want is the error's text.
func intSetter(min, max int, want string, set func(c *Config, n int)) func(c *Config, v string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			return errors.New(want)
		}
		set(c, n)
		return nil
	}
}

// durationAtLeast returns an option's setter for a duration of at least
// min, or 0 when zeroOK (the operating system's default).
func durationAtLeast(min time.Duration, zeroOK bool, set func(c *Config, d time.Duration)) func(c *Config, v string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || (d == 0 && !zeroOK) || (d > 0 && d < min) {
			if zeroOK {
				return errors.New("want a duration of at least " + min.String() + ", such as 15s, or 0 for the operating system's default")
			}
			return errors.New("want a duration of at least " + min.String() + ", such as 5s")
		}
		set(c, d)
		return nil
	}
}

// parseOptionalDuration parses a Go duration of at least 100ms, or 0 for
// off.
func parseOptionalDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d > 0 && d < 100*time.Millisecond) {
		return 0, errors.New("want a duration like 10s or 1m (at least 100ms), or 0 for off")
	}
	return d, nil
}

// parseSize parses a byte size as PostgreSQL writes them: a whole number
// with an optional unit B, kB, MB, GB or TB (1024-based, case-insensitive).
func parseSize(v string) (int64, error) {
	bad := errors.New("want a size like 512MB or 2GB (units B, kB, MB, GB, TB), or 0 for off")
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, bad
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, bad
	}
	shift := map[string]uint{"": 0, "b": 0, "kb": 10, "mb": 20, "gb": 30, "tb": 40}
	sh, ok := shift[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok || n > (1<<62)>>sh {
		return 0, bad
	}
	return n << sh, nil
}

// maxIdentBytes is PostgreSQL's longest name (NAMEDATALEN - 1); a longer
// one is silently truncated, so walcast would then look up another name
// than the one it created.
const maxIdentBytes = 63

func validIdent(s string) bool {
	if s == "" || len(s) > maxIdentBytes {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// usageError is a bad flag, variable or argument: walcast says which and
// why in one line and exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// flagValue adapts an option to flag.Value so that a flag given on the
// command line is validated as it is parsed.
type flagValue struct {
	o   *option
	cfg *Config
	val string
	// err receives the first invalid value's message. Set reports no
	// error to the flag package, which would print the raw value (a
	// password in a URL included).
	err *error
}

func (f *flagValue) String() string { return redact(f.o.flag, f.val) }

// IsBoolFlag lets a boolean option be given as a bare --name.
func (f *flagValue) IsBoolFlag() bool { return f.o.boolean }
func (f *flagValue) Set(v string) error {
	if err := f.o.set(f.cfg, v); err != nil {
		if *f.err == nil {
			*f.err = &usageError{fmt.Sprintf("invalid value %q for flag -%s: %s", redact(f.o.flag, v), f.o.flag, scrubError(f.o.flag, v, err))}
		}
		return nil
	}
	f.val = v
	return nil
}

// parseConfig reads the options of command from the config file, the
// environment and args (default, then file, then environment, then flag:
// the later wins), returning the remaining arguments.
func parseConfig(command string, args []string, getenv func(string) string) (*Config, []string, error) {
	cfg := &Config{}
	var file *fileConfig
	if path := configPath(args, getenv); path != "" {
		var err error
		if file, err = loadConfigFile(path); err != nil {
			return nil, nil, err
		}
	}
	fs := flag.NewFlagSet("walcast "+command, flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.Usage = func() {}
	var mine []*option
	var flagErr error
	for i := range options {
		o := &options[i]
		if !o.appliesTo(command) {
			continue
		}
		mine = append(mine, o)
		// Default first, then environment: both validated.
		if err := o.set(cfg, o.def); err != nil {
			return nil, nil, fmt.Errorf("default of --%s: %w", o.flag, err)
		}
		if file != nil {
			if fv, ok := file.values[o.flag]; ok {
				if err := o.set(cfg, fv.v); err != nil {
					return nil, nil, fileError(file.path, fv.line, "%s: %q: %s", o.flag, redact(o.flag, fv.v), scrubError(o.flag, fv.v, err))
				}
			} else if o.flag == "tables" && file.tables != nil {
				cfg.Tables = file.tables
			}
		}
		for _, name := range o.env {
			if v := getenv(name); v != "" {
				if err := o.set(cfg, v); err != nil {
					return nil, nil, &usageError{fmt.Sprintf("%s=%q: %s", name, redact(o.flag, v), scrubError(o.flag, v, err))}
				}
				break
			}
		}
		fs.Var(&flagValue{o: o, cfg: cfg, err: &flagErr}, o.flag, o.help)
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil, nil, &usageError{usage(command, mine)}
	case flagErr != nil:
		return nil, nil, flagErr
	case err != nil:
		return nil, nil, &usageError{err.Error()}
	}
	return cfg, fs.Args(), nil
}

func (o *option) appliesTo(command string) bool {
	for _, c := range o.in {
		if c == command {
			return true
		}
	}
	return slices.Contains(alsoIn[command], o.flag)
}

func usage(command string, opts []*option) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: walcast %s [flags]\n\nflags (each also read from its environment variable; flags win):\n", command)
	for _, o := range opts {
		def := ""
		if o.def != "" {
			def = fmt.Sprintf(" (default %q)", o.def)
		}
		fmt.Fprintf(&b, "  --%s  $%s%s\n      %s\n", o.flag, strings.Join(o.env, ", $"), def, o.help)
	}
	return b.String()
}

func envOS(name string) string { return os.Getenv(name) }
