package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/walcast/walcast/broadcast"
)

// Tests of the files beside the code that must agree with it.

// readRepoFile returns a file of the repository, by its path from the root.
func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("../../" + path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every flag and environment variable is documented in
// docs/configuration.md: adding an option without documenting it fails.
func TestEveryOptionIsDocumented(t *testing.T) {
	doc := readRepoFile(t, "docs/configuration.md")
	for _, o := range options {
		if !strings.Contains(doc, "`--"+o.flag+"`") {
			t.Errorf("docs/configuration.md does not document --%s", o.flag)
		}
		for _, env := range o.env {
			if !strings.Contains(doc, env) {
				t.Errorf("docs/configuration.md does not mention %s (for --%s)", env, o.flag)
			}
		}
	}
}

// compose.yaml must keep the settings walcast depends on (line checks on
// a file we write ourselves).
func TestComposeKeepsWhatWalcastNeeds(t *testing.T) {
	doc := readRepoFile(t, "compose.yaml")
	for _, want := range []string{
		`"wal_level=logical"`,
		`"--appendonly", "yes", "--appendfsync", "always"`,
		`command: ["capture"]`,
		`WALCAST_DATABASE_URL: postgres://`,
		`WALCAST_REDIS_URL: redis://redis:6379/0`,
		`./schema/election.sql:/docker-entrypoint-initdb.d/`,
		`WALCAST_INTERNAL_LISTEN: ":9090"`,
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("compose.yaml lacks %s", want)
		}
	}
	if n := strings.Count(doc, `command: ["serve"]`); n < 2 {
		t.Errorf("compose.yaml has %d serve replicas, want 2", n)
	}
}

// composeService is what the compose tests read of a service.
type composeService struct {
	Profiles    []string
	Entrypoint  []string
	Command     []string
	Environment map[string]string
}

// composeDefaults fills in compose's ${NAME:-default} with the default.
var composeDefaults = regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`)

// The "sentinel" profile: a primary and a replica with AOF and a
// password (masterauth too, so that a demoted primary follows the new
// one), three Sentinels watching the primary with quorum 2 and their own
// password, and a capture and a serve whose settings, compose's defaults
// filled in, are a valid walcast configuration on those Sentinels with
// --redis-min-replicas 1 and both passwords.
func TestComposeSentinelProfile(t *testing.T) {
	var doc struct{ Services map[string]composeService }
	if err := yaml.Unmarshal([]byte(readRepoFile(t, "compose.yaml")), &doc); err != nil {
		t.Fatal(err)
	}
	var sentinels, replicas, primaries []string
	var walcast []composeService
	redisPW, sentinelPW := "", ""
	for name, s := range doc.Services {
		if !slices.Contains(s.Profiles, "sentinel") {
			continue
		}
		cmd := composeDefaults.ReplaceAllString(strings.Join(s.Command, " "), "$1")
		switch {
		case strings.Contains(cmd, "--sentinel"):
			sentinels = append(sentinels, name)
			for _, want := range []string{"sentinel monitor walcast redis-primary 6379 2", "auth-pass walcast $$REDIS_PASSWORD", "requirepass $$SENTINEL_PASSWORD"} {
				if !strings.Contains(cmd, want) {
					t.Errorf("sentinel %s lacks %q", name, want)
				}
			}
			sentinelPW = composeDefaults.ReplaceAllString(s.Environment["SENTINEL_PASSWORD"], "$1")
		case strings.HasPrefix(cmd, "redis-server"):
			for _, want := range []string{"--appendonly yes --appendfsync always", "--requirepass ", "--masterauth "} {
				if !strings.Contains(cmd, want) {
					t.Errorf("redis %s lacks %q", name, want)
				}
			}
			redisPW = strings.Fields(cmd[strings.Index(cmd, "--requirepass ")+len("--requirepass "):])[0]
			if strings.Contains(cmd, "--replicaof redis-primary 6379") {
				replicas = append(replicas, name)
			} else {
				primaries = append(primaries, name)
			}
		case len(s.Command) == 1:
			walcast = append(walcast, s)
		}
	}
	if len(sentinels) != 3 || !slices.Equal(primaries, []string{"redis-primary"}) || len(replicas) != 1 {
		t.Fatalf("sentinels %v, primaries %v, replicas %v: want 3, [redis-primary], 1", sentinels, primaries, replicas)
	}
	slices.Sort(sentinels)
	var modes []string
	for _, s := range walcast {
		mode := s.Command[0]
		modes = append(modes, mode)
		env := func(k string) string { return composeDefaults.ReplaceAllString(s.Environment[k], "$1") }
		cfg, _, err := parseConfig(mode, nil, env)
		if err != nil {
			t.Errorf("%s: %v", mode, err)
			continue
		}
		if mode == cmdCapture && cfg.Transport.RedisMinReplicas != 1 {
			t.Errorf("%s: --redis-min-replicas %d, want 1", mode, cfg.Transport.RedisMinReplicas)
		}
		o, err := broadcast.ParseSentinelURL(cfg.RedisURL)
		if err != nil {
			t.Errorf("%s: %v", mode, err)
			continue
		}
		var want []string
		for _, name := range sentinels {
			want = append(want, name+":26379")
		}
		if !slices.Equal(o.SentinelAddrs, want) || o.MasterName != "walcast" || o.Password != redisPW || o.SentinelPassword != sentinelPW || redisPW == "" || sentinelPW == "" {
			t.Errorf("%s: --redis-url names %v/%s with passwords %q and %q; want %v/walcast with %q and %q", mode, o.SentinelAddrs, o.MasterName, o.Password, o.SentinelPassword, want, redisPW, sentinelPW)
		}
	}
	slices.Sort(modes)
	if !slices.Equal(modes, []string{"capture", "serve"}) {
		t.Errorf("the sentinel profile runs walcast %v, want capture and serve", modes)
	}
}
