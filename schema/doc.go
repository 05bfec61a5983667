// Package schema is the root of walcast's domain: the row changes read from
// PostgreSQL (Change, Tx), the typed update messages sent to browsers
// (Message), the routing of the election tables to those messages (Router),
// and the election tables' SQL (SQL).
//
// It imports no other walcast package. The cdc package produces Tx values;
// the broadcast package stores and delivers Message values; cmd/walcast
// connects the two with a Router.
//
// Start with Router.Route: it is where a committed row change becomes the
// JSON frame the front end already understands.
package schema
