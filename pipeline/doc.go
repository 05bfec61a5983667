// Package pipeline carries committed transactions from capture to the bus:
// it routes each change to its message (schema.Router), appends the
// messages, reports what it stored, and places the dashboards' own
// messages on the same bus without breaking its increasing ids.
//
// Start with Sink, capture's sink (it satisfies cdc.Sink), then
// Dashboards, which holds the position rule. The package declares the
// small interfaces it needs of the bus (Bus, DashboardBus) and of the
// dashboard builder (Noter), and imports only schema of walcast's own
// packages, so it is tested here against fakes; cmd/walcast wires the real
// bus and builder in.
package pipeline
