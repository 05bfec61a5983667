package main

import (
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/broadcast"
)

// Secrets reach walcast in --jwt-secret and in the passwords of
// --database-url and --redis-url (flags or environment). None is ever
// printed: error messages about these options show the value with its
// secret parts masked (redact) and never repeat a parser's error text that
// still holds one (scrubError); and as a backstop, everything walcast
// writes to stdout and stderr (logs at every level, errors, `walcast
// check`) and the detailed /readyz reasons pass through a redactor that
// masks the configured secrets.

const mask = "xxxxx"

// secretOption reports whether the flag's value holds a secret.
func secretOption(flag string) bool {
	return flag == "jwt-secret" || flag == "database-url" || flag == "redis-url"
}

var (
	dsnPassword   = regexp.MustCompile(`(?i)((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
	queryPassword = regexp.MustCompile(`(?i)([?&](?:ssl|sentinel_)?password=)([^&#]*)`)
)

// redact returns v fit to print in a message about the option flagName.
func redact(flagName, v string) string {
	switch flagName {
	case "jwt-secret":
		return "…"
	case "database-url", "redis-url":
		return redactURL(v)
	}
	return v
}

// redactURL masks the password of a URL (user info, password= query
// parameters) or of a libpq key=value string, also when it does not parse.
func redactURL(v string) string {
	if i := strings.Index(v, "://"); i >= 0 {
		rest := v[i+3:]
		// The user info ends at the last '@' (a password may hold '/' or
		// '@' when it is not escaped).
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user := rest[:at]
			if c := strings.IndexByte(user, ':'); c >= 0 {
				user = user[:c] + ":" + mask
			} else if u, err := url.Parse(v); err != nil || u.User == nil {
				// Unparsable user info: it may all be a password.
				user = mask
			}
			v = v[:i+3] + user + rest[at:]
		}
		return queryPassword.ReplaceAllString(v, "${1}"+mask)
	}
	return dsnPassword.ReplaceAllString(v, "${1}"+mask)
}

// secretParts returns the secret substrings of an option's value, as they
// could appear in an error message: raw, decoded and quoted.
func secretParts(flagName, v string) []string {
	var parts []string
	switch flagName {
	case "jwt-secret":
		parts = append(parts, v)
	case "database-url", "redis-url":
		if i := strings.Index(v, "://"); i >= 0 {
			rest := v[i+3:]
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				user := rest[:at]
				if c := strings.IndexByte(user, ':'); c >= 0 {
					parts = append(parts, user[c+1:])
				} else if u, err := url.Parse(v); err != nil || u.User == nil {
					parts = append(parts, user) // unparsable: may all be a password
				}
			}
		}
		for _, m := range queryPassword.FindAllStringSubmatch(v, -1) {
			parts = append(parts, m[2])
		}
		for _, m := range dsnPassword.FindAllStringSubmatch(v, -1) {
			parts = append(parts, strings.Trim(m[2], "'"))
		}
		if u, err := url.Parse(v); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				parts = append(parts, pw)
			}
		}
	}
	var out []string
	for _, p := range parts {
		if p == "" {
			continue
		}
		out = append(out, p)
		if d, err := url.PathUnescape(p); err == nil && d != p {
			out = append(out, d)
		}
		if q := strconv.Quote(p); q[1:len(q)-1] != p {
			out = append(out, q[1:len(q)-1])
		}
	}
	return out
}

// scrubError returns the text of err, a parser's error about the option's
// value v, with every secret part of v masked.
func scrubError(flagName, v string, err error) string {
	msg := err.Error()
	if !secretOption(flagName) {
		return msg
	}
	for _, p := range secretParts(flagName, v) {
		msg = strings.ReplaceAll(msg, p, mask)
	}
	return msg
}

// minSecretLen: shorter configured secrets are not masked in output by the
// redactor (masking "pw" would garble every line); the targeted masking
// of option errors still applies to them.
const minSecretLen = 4

// redactor masks configured secrets in text.
type redactor struct {
	mu      sync.RWMutex
	secrets []string
}

// add registers the secrets of cfg: the JWT secret and the database and
// Redis passwords.
func (r *redactor) add(cfg *Config) {
	var s []string
	s = append(s, secretParts("jwt-secret", cfg.JWTSecret)...)
	s = append(s, secretParts("database-url", cfg.DatabaseURL)...)
	s = append(s, secretParts("redis-url", cfg.RedisURL)...)
	if cfg.DatabaseURL != "" {
		if pc, err := pgconn.ParseConfig(cfg.DatabaseURL); err == nil && pc.Password != "" {
			s = append(s, pc.Password) // also from PGPASSWORD or a passfile
		}
	}
	if cfg.RedisURL != "" {
		if o, err := redis.ParseURL(cfg.RedisURL); err == nil && o.Password != "" {
			s = append(s, o.Password)
		}
		if o, err := broadcast.ParseClusterURL(cfg.RedisURL); err == nil && o.Password != "" {
			s = append(s, o.Password)
		}
		if o, err := broadcast.ParseSentinelURL(cfg.RedisURL); err == nil {
			s = append(s, o.Password, o.SentinelPassword) // decoded
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range s {
		if len(v) >= minSecretLen {
			r.secrets = append(r.secrets, v)
		}
	}
}

// redact masks every registered secret in s.
func (r *redactor) redact(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, v := range r.secrets {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, mask)
		}
	}
	return s
}

// writer returns w with every registered secret masked. Each Write is
// masked on its own: slog handlers and fmt write a line in one call.
func (r *redactor) writer(w io.Writer) io.Writer { return &redactingWriter{w: w, r: r} }

type redactingWriter struct {
	w io.Writer
	r *redactor
}

func (rw *redactingWriter) Write(p []byte) (int, error) {
	rw.r.mu.RLock()
	none := len(rw.r.secrets) == 0
	rw.r.mu.RUnlock()
	if none {
		return rw.w.Write(p)
	}
	if _, err := io.WriteString(rw.w, rw.r.redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
