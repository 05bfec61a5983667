package schema

// The message types of the front end's protocol.
const (
	TypeGuarantee  = "guarantee_update"
	TypeAttendance = "attendance_update"
	TypeVoting     = "voting_update"
	TypeDashboard  = "dashboard_update"
)

// Message is one update ready to store and deliver: its JSON frame, encoded
// once, and the few facts delivery decides on, so that no subscriber ever
// parses the frame.
type Message struct {
	Pos  Position // the message id; increasing in commit order
	Type string   // one of the Type constants

	// Committee and Owner scope who may receive the message. A message with
	// neither is election-wide and goes to every authenticated connection.
	Committee    int64
	HasCommittee bool
	Owner        int64
	HasOwner     bool
	// AdminOnly keeps a message whose scope is unknown from everyone but
	// admins, rather than sending it to all as if it were election-wide.
	AdminOnly bool

	JSON []byte // the complete text frame sent to clients
}

// ID returns the message id clients see.
func (m *Message) ID() string { return m.Pos.String() }
