package schema

import "strconv"

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
	// Unroutable says why walcast could not place the message (one of the
	// Unroutable constants) when that is why AdminOnly is set; "" when
	// the scope is known. It is not stored on the bus.
	Unroutable string

	// DashboardKey names the dashboard a TypeDashboard message carries
	// ("admin", "supervisor:3", "personal:12"; see DashboardKey); empty
	// for other types. A newer message for the same key supersedes an
	// older one, which is what lets a server send a new connection only
	// the latest of each.
	DashboardKey string

	// Row is the row the change writes, for the live state; nil for
	// dashboards, markers and tables without a primary key.
	Row *RowRef

	// Left is, for an UPDATE that moved its row to another scope (another
	// committee or owner; known under REPLICA IDENTITY FULL), the scope
	// the row had before. A connection that may see Left but not the
	// message receives LeftJSON instead of JSON: a "deleted" frame of the
	// old row marked "left", since the row left its view.
	Left     *Scope
	LeftJSON []byte

	JSON []byte // the complete text frame sent to clients
}

// ID returns the message id clients see.
func (m *Message) ID() string { return m.Pos.String() }

// The dashboard types of dashboard_update messages.
const (
	DashboardPersonal   = "personal"   // one user's own work; scoped to that user (Owner)
	DashboardSupervisor = "supervisor" // one committee; scoped to it (Committee)
	DashboardAdmin      = "admin"      // the whole election; AdminOnly
)

// DashboardKey returns the key of a dashboard: its type, and the user or
// committee it is about ("personal:12", "supervisor:3", "admin").
func DashboardKey(dashboardType string, id int64) string {
	if dashboardType == DashboardAdmin {
		return DashboardAdmin
	}
	return dashboardType + ":" + strconv.FormatInt(id, 10)
}

// Scope is who may receive a message, as Message's fields of the same
// names say.
type Scope struct {
	Committee    int64
	HasCommittee bool
	Owner        int64
	HasOwner     bool
	AdminOnly    bool
}

// scopeOf returns m's scope.
func (m *Message) scopeOf() Scope {
	return Scope{Committee: m.Committee, HasCommittee: m.HasCommittee, Owner: m.Owner, HasOwner: m.HasOwner, AdminOnly: m.AdminOnly}
}
