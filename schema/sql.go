package schema

import _ "embed"

// SQL creates the election tables (committee, candidate, guarantee,
// attendance, vote_count, election_results) with REPLICA IDENTITY FULL on
// the tracked ones. It is idempotent.
//
//go:embed election.sql
var SQL string
