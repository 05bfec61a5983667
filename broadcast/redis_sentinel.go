package broadcast

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/netguard"
)

// A Sentinel deployment is named by one URL, so that every place that
// takes --redis-url (capture, serve, presence) takes it unchanged:
//
//	redis-sentinel://[user:password@]host1:port1,host2:port2/<master-name>[/db]?sentinel_username=…&sentinel_password=…
//
// The user info is the primary's (and its replicas') credentials, as in a
// redis:// URL; the Sentinels' own, when they have requirepass or ACLs,
// go in the query. rediss-sentinel:// speaks TLS to the Sentinels and to
// the primary. go-redis's ParseFailoverURL takes one address and puts the
// Sentinels' password in the user info, which reads as the primary's to
// anyone used to redis://; walcast keeps the redis:// meaning.
const (
	sentinelScheme    = "redis-sentinel"
	sentinelTLSScheme = "rediss-sentinel"
	// defaultSentinelPort is Sentinel's port when an address has none.
	defaultSentinelPort = "26379"
)

// IsSentinelURL reports whether u names a Sentinel deployment.
func IsSentinelURL(u string) bool {
	return strings.HasPrefix(u, sentinelScheme+"://") || strings.HasPrefix(u, sentinelTLSScheme+"://")
}

// ParseSentinelURL parses a redis-sentinel:// URL (see above) into go-redis
// failover options. Its errors name the part that is wrong and never
// repeat a password.
func ParseSentinelURL(s string) (*redis.FailoverOptions, error) {
	scheme, rest, _ := strings.Cut(s, "://")
	if scheme != sentinelScheme && scheme != sentinelTLSScheme {
		return nil, errors.New("a Sentinel URL begins with redis-sentinel:// or rediss-sentinel://")
	}
	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	o := &redis.FailoverOptions{}
	hosts := authority
	// The user info ends at the last '@', as in redactURL: a password may
	// hold an unescaped '@'.
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		var err error
		if o.Username, o.Password, err = sentinelUserInfo(authority[:at]); err != nil {
			return nil, err
		}
		hosts = authority[at+1:]
	}
	addrs, err := sentinelAddrs(hosts)
	if err != nil {
		return nil, err
	}
	o.SentinelAddrs = addrs
	if o.MasterName, o.DB, err = sentinelPath(path); err != nil {
		return nil, err
	}
	if err := sentinelQuery(query, o); err != nil {
		return nil, err
	}
	if scheme == sentinelTLSScheme {
		// No ServerName: the dialer takes it from each address.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// sentinelUserInfo decodes user[:password] of the primary.
func sentinelUserInfo(info string) (user, password string, err error) {
	user, password, _ = strings.Cut(info, ":")
	if user, err = url.PathUnescape(user); err != nil {
		return "", "", errors.New("the user name in the Sentinel URL has a bad %-escape")
	}
	if password, err = url.PathUnescape(password); err != nil {
		return "", "", errors.New("the password in the Sentinel URL has a bad %-escape")
	}
	return user, password, nil
}

// sentinelAddrs parses the comma-separated Sentinel addresses.
func sentinelAddrs(hosts string) ([]string, error) {
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port: Sentinel's default.
			host, port = strings.Trim(h, "[]"), defaultSentinelPort
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return nil, fmt.Errorf("sentinel address %q is not host:port", h)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	if len(addrs) == 0 {
		return nil, errors.New("the Sentinel URL names no Sentinel address")
	}
	return addrs, nil
}

// sentinelPath parses <master-name>[/db].
func sentinelPath(path string) (string, int, error) {
	name, db, _ := strings.Cut(strings.Trim(path, "/"), "/")
	if name == "" {
		return "", 0, errors.New("the Sentinel URL names no master (the <master-name> of the Sentinels' `sentinel monitor <master-name> …`)")
	}
	name, err := url.PathUnescape(name)
	if err != nil {
		return "", 0, errors.New("the master name in the Sentinel URL has a bad %-escape")
	}
	if db == "" {
		return name, 0, nil
	}
	n, err := strconv.Atoi(db)
	if err != nil || n < 0 || strings.Contains(db, "/") {
		return "", 0, fmt.Errorf("the database in the Sentinel URL is not a number: want /<master-name>/<db>")
	}
	return name, n, nil
}

// sentinelQuery reads the Sentinels' credentials from the query.
func sentinelQuery(query string, o *redis.FailoverOptions) error {
	q, err := url.ParseQuery(query)
	if err != nil {
		return errors.New("the query of the Sentinel URL does not parse (a bad %-escape?)")
	}
	for k, v := range q {
		switch k {
		case "sentinel_username":
			o.SentinelUsername = v[len(v)-1]
		case "sentinel_password":
			o.SentinelPassword = v[len(v)-1]
		default:
			return fmt.Errorf("unknown parameter %q in the Sentinel URL: it takes sentinel_username and sentinel_password", k)
		}
	}
	return nil
}

// newSentinelClient returns a client of the primary the Sentinels of fo
// name, with walcast's timeouts and tracked connections (newRedisClient's,
// see there). go-redis asks the Sentinels for the primary at every new
// connection and drops the connections to a demoted one, so after a
// failover the next command (capture's retried append, the follower's next
// read) reaches the new primary. Connections to the Sentinels go through
// the same dialer.
func newSentinelClient(cfg RedisConfig, fo *redis.FailoverOptions, conns *netguard.Tracker) *redis.Client {
	fo.MaxRetries = 0 // go-redis's default, as for a plain redis:// URL (see newRedisClient)
	fo.ContextTimeoutEnabled = true
	fo.ReadTimeout = cfg.Timeout
	fo.WriteTimeout = cfg.Timeout
	fo.DialTimeout = cfg.Timeout
	fo.Dialer = guardedDialer(cfg, fo.TLSConfig, conns)
	return redis.NewFailoverClient(fo)
}

// sentinelProblem returns the BusError of a Sentinel deployment that
// cannot work as configured (walcast stops at start with the fix), nil for
// anything else: Sentinels that do not answer are retried like an
// unreachable Redis. go-redis reports what every Sentinel said under one
// error.
func sentinelProblem(err error) *BusError {
	if err == nil || !strings.Contains(err.Error(), "all sentinels specified in configuration are unreachable") {
		return nil
	}
	switch {
	case isAuthError(err):
		return &BusError{Problem: "the Redis Sentinels refused authentication: " + err.Error(),
			Fix: "put the Sentinels' own password in sentinel_password= (and their user in sentinel_username=) of --redis-url; the user info is the primary's"}
	case errors.Is(err, redis.Nil):
		return &BusError{Problem: "the Redis Sentinels monitor no master of the name in --redis-url",
			Fix: "use the <master-name> of the Sentinels' `sentinel monitor <master-name> …` line: redis-sentinel://host1:26379,…/<master-name>"}
	}
	return nil
}
