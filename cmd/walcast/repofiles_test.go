package main

import (
	"os"
	"strings"
	"testing"
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

// compose.yaml must keep the settings walcast depends on. (No YAML parser
// is a dependency; these are line checks on a file we write ourselves.)
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
