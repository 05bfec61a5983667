package main

import (
	"os"
	"strings"
	"testing"
)

// compose.yaml must keep the settings walcast depends on. (No YAML parser
// is a dependency; these are line checks on a file we write ourselves.)
func TestComposeKeepsWhatWalcastNeeds(t *testing.T) {
	b, err := os.ReadFile("../../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
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
