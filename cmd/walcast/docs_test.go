package main

import (
	"os"
	"strings"
	"testing"
)

// Every flag and environment variable is documented in
// docs/configuration.md: adding an option without documenting it fails.
func TestEveryOptionIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
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
