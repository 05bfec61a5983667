package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// Secrets used by the leak tests; none may appear in any output.
const (
	dbPassword    = "Db-S3cret/pw"
	redisPassword = "Rd-S3cret:pw"
	jwtKey        = "Jwt-S3cret-signing-key"
)

// tryGet is httpGet that reports a failed request as status 0.
func tryGet(u string) (int, string) {
	resp, err := httpClient.Get(u)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// assertNoMask fails when out masks what is no secret (a user name).
func assertNoMask(t *testing.T, where, out string) {
	t.Helper()
	if strings.Contains(out, "user=xxxxx") || strings.Contains(out, "xxxxx check") || strings.Contains(out, "walcast:xxxxx@127.0.0.1:port") && !strings.Contains(out, "cannot parse") {
		t.Errorf("%s masks more than the secrets: %s", where, out)
	}
}

// assertNoSecret fails when out holds a secret in any spelling.
func assertNoSecret(t *testing.T, where, out string) {
	t.Helper()
	for _, s := range []string{dbPassword, redisPassword, jwtKey} {
		for _, form := range []string{s, url.PathEscape(s), url.QueryEscape(s), url.UserPassword("u", s).String()[2:]} {
			if strings.Contains(out, form) {
				t.Errorf("%s shows a secret (%q): %s", where, form, out)
			}
		}
	}
}

// Every bad value of a secret-bearing option, as a flag or from the
// environment, for every command that takes it: a clear error, no secret.
func TestSecretsNeverPrintedInConfigurationErrors(t *testing.T) {
	esc := url.UserPassword("walcast", dbPassword).String() // escaped user info
	resc := url.UserPassword("", redisPassword).String()
	values := []struct {
		flag, env, value string
		in               []string
	}{
		{"redis-url", "WALCAST_REDIS_URL", "redis://" + resc + "@redis:6379/0/extra", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "REDIS_URL", "redis://:" + redisPassword + "@redis:6379/0/1", []string{cmdRun, cmdCapture, cmdServe}}, // unescaped ':' in the password
		{"redis-url", "WALCAST_REDIS_URL", "redis://:" + redisPassword + "%zz@redis:6379/0", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "http://" + resc + "@redis:6379/0", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis://" + resc + "@redis:6379/zero", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis://" + resc + "@redis:6379/0?dial_timeout=soon", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis-cluster://" + resc + "@redis:6379,redis2:port", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis-cluster://:" + redisPassword + "%zz@redis:6379,redis2:6379", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis-cluster://" + resc + "@redis:6379/1", []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "rediss-cluster://" + resc + "@redis:6379?dial_timeout=soon", []string{cmdRun, cmdCapture, cmdServe}},
		// Sentinel: no master name, a bad port, an unknown parameter, a
		// bad escape, each with both passwords set.
		{"redis-url", "WALCAST_REDIS_URL", "redis-sentinel://" + resc + "@s1:26379,s2:26379?sentinel_password=" + url.QueryEscape(redisPassword), []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "REDIS_URL", "redis-sentinel://" + resc + "@s1:port,s2/walcast?sentinel_password=" + url.QueryEscape(redisPassword), []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "redis-sentinel://:" + redisPassword + "@s1/walcast?password=" + url.QueryEscape(redisPassword), []string{cmdRun, cmdCapture, cmdServe}},
		{"redis-url", "WALCAST_REDIS_URL", "rediss-sentinel://s1/walcast/0?sentinel_password=" + redisPassword + "%zz", []string{cmdServe}},
	}
	for _, v := range values {
		for _, cmd := range v.in {
			for _, viaEnv := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/env=%v/%.40s", cmd, v.flag, viaEnv, v.value)
				t.Run(name, func(t *testing.T) {
					// Should the value be accepted, walcast must not take a
					// real port, nor wait long.
					args := []string{cmd, "--listen", "127.0.0.1:0", "--jwt-secret", jwtKey, "--database-url", "postgres://" + esc + "@db/election"}
					if cmd == cmdServe {
						args = []string{cmd, "--listen", "127.0.0.1:0", "--jwt-secret", jwtKey}
					}
					if cmd == cmdCapture {
						args = []string{cmd, "--listen", "127.0.0.1:0", "--database-url", "postgres://" + esc + "@db/election"}
					}
					env := map[string]string{}
					if viaEnv {
						env[v.env] = v.value
					} else {
						args = append(args, "--"+v.flag, v.value)
					}
					var out, errOut syncBuffer
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					code := realMainContext(ctx, args, &out, &errOut, func(k string) string { return env[k] })
					if code != 2 {
						t.Errorf("exit %d, want 2; stderr: %s", code, errOut.String())
					}
					if !strings.Contains(errOut.String(), "redis") {
						t.Errorf("the error does not name the option: %s", errOut.String())
					}
					assertNoSecret(t, "stderr", errOut.String())
					assertNoSecret(t, "stdout", out.String())
				})
			}
		}
	}
	// The JWT secret next to another bad option, and a flag parse error.
	for _, args := range [][]string{
		{"run", "--jwt-secret", jwtKey, "--history", "lots"},
		{"serve", "--jwt-secret", jwtKey, "--bogus"},
		{"run", "--jwt-secret=" + jwtKey, "--database-url", "postgres://" + esc + "@db/e", "extra"},
		{"serve", "--redis-url", "redis://h:6379/0", "--jwt-public-key", "-----BEGIN PRIVATE KEY-----\n" + jwtKey + "\n-----END PRIVATE KEY-----"},
	} {
		var out, errOut syncBuffer
		code := realMainContext(context.Background(), args, &out, &errOut, func(string) string { return "" })
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", args[:2], code)
		}
		assertNoSecret(t, "stderr", errOut.String())
	}
}

// Running with secrets in every option, at debug level, against a database
// and a Redis that cannot be reached or parsed: the logs, errors, `walcast
// check` and both /readyz show no secret.
func TestSecretsNeverPrintedAtRuntime(t *testing.T) {
	for _, r := range secretRuns(testenv.FreePort(t)) {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			runWithSecrets(t, r)
		})
	}
}

// secretRun is one command of TestSecretsNeverPrintedAtRuntime: its
// arguments and environment.
type secretRun struct {
	name string
	args []string
	env  map[string]string
}

// secretRuns returns every command with secrets in its options, against
// servers at port closed, where nothing listens.
func secretRuns(closed int) []secretRun {
	dbURLs := map[string]string{
		"unreachable": fmt.Sprintf("postgres://walcast:%s@127.0.0.1:%d/election?sslmode=disable", url.PathEscape(dbPassword), closed),
		"query":       fmt.Sprintf("postgres://walcast@127.0.0.1:%d/election?password=%s", closed, url.QueryEscape(dbPassword)),
		"keyvalue":    fmt.Sprintf("host=127.0.0.1 port=%d user=walcast password='%s' dbname=election", closed, dbPassword),
		"bad port":    fmt.Sprintf("postgres://walcast:%s@127.0.0.1:port/election", url.PathEscape(dbPassword)),
	}
	redisURL := fmt.Sprintf("redis://:%s@127.0.0.1:%d/0", url.PathEscape(redisPassword), closed)
	unreachable := dbURLs["unreachable"]
	runs := []secretRun{
		{"run flags", []string{"run", "--database-url", unreachable, "--redis-url", redisURL, "--jwt-secret", jwtKey}, nil},
		{"run env query", []string{"run"}, map[string]string{"DATABASE_URL": dbURLs["query"], "WALCAST_JWT_SECRET": jwtKey}},
		{"run flags keyvalue", []string{"run", "--database-url", dbURLs["keyvalue"], "--jwt-secret", jwtKey}, nil},
		{"run env bad port", []string{"run"}, map[string]string{"WALCAST_DATABASE_URL": dbURLs["bad port"], "WALCAST_JWT_SECRET": jwtKey}},
		{"capture env", []string{"capture"}, map[string]string{"WALCAST_DATABASE_URL": unreachable, "REDIS_URL": redisURL}},
		{"capture flags", []string{"capture", "--database-url", dbURLs["bad port"], "--redis-url", redisURL}, nil},
		{"serve flags", []string{"serve", "--redis-url", redisURL, "--jwt-secret", jwtKey}, nil},
		{"serve env", []string{"serve"}, map[string]string{"WALCAST_REDIS_URL": redisURL, "WALCAST_JWT_SECRET": jwtKey}},
		{"serve cluster", []string{"serve", "--redis-url", fmt.Sprintf("redis-cluster://walcast:%s@127.0.0.1:%d,127.0.0.1:%d", url.PathEscape(redisPassword), closed, closed),
			"--jwt-secret", jwtKey}, nil},
		{"token", []string{"token", "--jwt-secret", jwtKey, "7", "admin"}, nil},
	}
	for kind, db := range dbURLs {
		runs = append(runs,
			secretRun{"check flags " + kind, []string{"check", "--database-url", db}, nil},
			secretRun{"check env " + kind, []string{"check"}, map[string]string{"DATABASE_URL": db}})
	}
	return runs
}

// runWithSecrets runs r at debug level and checks that its output, and
// both /readyz of a serving command, show no secret.
func runWithSecrets(t *testing.T, r secretRun) {
	serves := r.args[0] == cmdRun || r.args[0] == cmdServe || r.args[0] == cmdCapture
	args := r.args
	var public, internal string
	if serves {
		public = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		internal = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		args = append(args, "--listen", public, "--internal-listen", internal, "--log-level", "debug")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- realMainContext(ctx, args, &out, &errOut, func(k string) string { return r.env[k] }) }()
	if serves {
		checkReadyzHidesSecrets(t, public, internal, done)
		cancel()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("walcast did not stop")
	}
	assertNoSecret(t, "stderr", errOut.String())
	assertNoSecret(t, "stdout", out.String())
	assertNoMask(t, "stderr", errOut.String())
	assertNoMask(t, "stdout", out.String())
	if testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
}

// checkReadyzHidesSecrets waits until readiness reports the failure (or
// walcast stopped on it: done), then reads both /readyz.
func checkReadyzHidesSecrets(t *testing.T, public, internal string, done chan int) {
	t.Helper()
	deadline, seen, exited := time.Now().Add(20*time.Second), false, false
	for time.Now().Before(deadline) {
		code, body := tryGet("http://" + internal + "/readyz")
		if code == 503 && (strings.Contains(body, "not streaming: ") || strings.Contains(body, "unreachable")) {
			assertNoSecret(t, "internal /readyz", body)
			_, pub := tryGet("http://" + public + "/readyz")
			assertNoSecret(t, "public /readyz", pub)
			t.Logf("internal /readyz: %s", body)
			seen = true
			break
		}
		select {
		case code := <-done:
			done <- code
			deadline, exited = time.Time{}, true
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !seen && !exited {
		t.Errorf("/readyz never reported the failure")
	}
}

// The backstop: whatever reaches stdout or stderr is masked.
func TestRedactorMasksConfiguredSecrets(t *testing.T) {
	cfg := &Config{JWTSecret: jwtKey, DatabaseURL: "postgres://u:" + url.PathEscape(dbPassword) + "@h/db",
		RedisURL: "redis://:" + url.PathEscape(redisPassword) + "@h:6379/0"}
	red := &redactor{}
	red.add(cfg)
	// The Sentinels' password, as the query spells it.
	red.add(&Config{RedisURL: "redis-sentinel://h1,h2/m?sentinel_password=" + url.QueryEscape(dbPassword)})
	var b strings.Builder
	w := red.writer(&b)
	line := fmt.Sprintf("a driver echoing %s, %s and %s, escaped %s\n", dbPassword, redisPassword, jwtKey, url.PathEscape(dbPassword))
	if n, err := io.WriteString(w, line); n != len(line) || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	assertNoSecret(t, "redacted output", b.String())
	if !strings.Contains(b.String(), "a driver echoing xxxxx") {
		t.Errorf("output %q", b.String())
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:pw@h:6379/0":                      "redis://:xxxxx@h:6379/0",
		"redis://user:p@ss/w@h:6379/0":              "redis://user:xxxxx@h:6379/0",
		"redis://h:6379/0":                          "redis://h:6379/0",
		"postgres://u@h/db?password=pw&sslmode=off": "postgres://u@h/db?password=xxxxx&sslmode=off",
		"host=h password='p w' user=u":              "host=h password=xxxxx user=u",
		"host=h password=pw user=u":                 "host=h password=xxxxx user=u",
		"redis://onlyapassword%zz@h":                "redis://xxxxx@h",
		"redis-sentinel://:pw@h1:26379,h2:26379/m/0?sentinel_username=s&sentinel_password=spw": "redis-sentinel://:xxxxx@h1:26379,h2:26379/m/0?sentinel_username=s&sentinel_password=xxxxx",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
