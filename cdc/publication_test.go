package cdc

import "testing"

// pgoutput splits publication_names like SQL identifiers: unquoted names
// fold to lower case and commas separate. The option quotes the name so
// that it is taken exactly.
func TestPublicationNamesOption(t *testing.T) {
	for name, want := range map[string]string{
		"walcast":     `'"walcast"'`,
		"Walcast_Pub": `'"Walcast_Pub"'`,
		`we"ird, pub`: `'"we""ird, pub"'`,
		"it's":        `'"it''s"'`,
	} {
		if got := publicationNamesOption(name); got != want {
			t.Errorf("publicationNamesOption(%q) = %s, want %s", name, got, want)
		}
	}
}
