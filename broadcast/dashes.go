package broadcast

import "github.com/walcast/walcast/schema"

// Dashboards apart from the window.
//
// The window holds the newest len(window) changes (and markers), and the
// dashboard messages have a ring of their own. When both shared the
// window, its size in bytes followed the dashboards' rate: a dashboard
// frame is about half a change's (208 against 416 bytes in the soak), and
// the dashboard builder emits every dirty dashboard once a round, so the
// faster its rounds, the more of the window they took. In the soak
// (5,000 inserts/s into a table that grows from empty) the rounds slow
// down as the table grows, from 2 a second to one every few seconds, and
// the dashboards' share of the window fell from 30% to a few percent:
// +4 MiB of changes live, twice that in heap goal, most of the soak's
// RSS creep. With a ring each, both hold a fixed number of messages once
// traffic has filled them, and a burst of dashboards no longer shortens
// how far behind a client may fall on changes before it is closed as too
// slow (4008).
//
// Delivery merges the two in the order they were published (order), so a
// connection sees changes and dashboards as before. A connection that
// falls more than the dashboard ring behind is not closed: dashboards
// are snapshots, and it is sent the newest of each it may see instead of
// the ones it missed, as after a subscribe.

// DashboardWindow is the size of the dashboard ring of a hub whose window
// is window: a sixteenth of it, at least 1,024 (4,096 by default: two of
// the builder's largest rounds, a second of dashboards at its fastest).
// A connection that keeps up is served after every publish, so the ring
// need only hold what one round publishes; each dashboard in it costs
// about 370 bytes (its frame and message), which the ring holds whatever
// the dashboards' rate.
func DashboardWindow(window int) int {
	if window <= 0 {
		window = DefaultWindow
	}
	return max(window/16, 1024)
}

// dashEntry is a dashboard message in the ring and its place in the
// order of all messages stored (Hub.total when it was stored).
type dashEntry struct {
	m     *schema.Message
	order uint64
}

// storeDashboard adds m to the dashboard ring and keeps it as its
// dashboard's newest message; h.mu is held.
func (h *Hub) storeDashboard(m *schema.Message) {
	h.dashes[h.dhead%uint64(len(h.dashes))] = dashEntry{m: m, order: h.total}
	h.dhead++
	h.total++
	h.last = m.Pos
	h.keepDashboard(m)
}

// catchUpDashboards serves a connection whose dashboard cursor fell out of
// the ring: it is sent the newest dashboard of each it may see, and its
// cursor moves to where they are current. Its last position stays: the
// changes it is still owed are older than these snapshots. The owner
// calls it.
func (c *client) catchUpDashboards(p *Principal, f *filter) {
	msgs, at := c.srv.cfg.Hub.dashboardsSince(p)
	for _, m := range msgs {
		if f.allows(m) {
			c.appendFrame(m.JSON)
		}
	}
	c.dcursor.Store(at)
}
