package schema

// Origin identifies the database history a bus's messages came from: a
// change's Position is only comparable with positions of the same history.
// Capture records it with the stored messages and checks it before every
// replication session.
type Origin struct {
	SystemID string // pg_control's database system identifier
	Timeline int32  // the timeline the messages were read on
	Slot     string // the replication slot they were read from
}
