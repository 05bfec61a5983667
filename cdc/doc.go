// Package cdc reads committed row changes from PostgreSQL's logical
// replication stream (the pgoutput plugin) and hands them, a transaction at
// a time, to a Sink.
//
// Start with Capture: it manages the replication connection, the slot and
// the publication, and acknowledges to PostgreSQL only positions the sink
// has stored. Decoder turns pgoutput messages into schema.Tx values and is
// pure (bytes in, values out), so it is table-tested against captured
// fixtures in testdata/ and fuzzed. Check diagnoses a database's setup;
// Capture runs the same checks before every session and stops on the
// first problem with Check's words.
package cdc
