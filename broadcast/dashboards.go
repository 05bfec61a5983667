package broadcast

import (
	"context"
	"sort"

	"github.com/walcast/walcast/schema"
)

// Dashboards: the capturing process appends dashboard_update messages to
// the bus like changes (see the dashboard package). Every replica keeps
// the newest message of each dashboard it has seen, so that a connection
// gets the current dashboards it may see right after its welcome (and
// after a subscribe naming dashboard_update), then their updates live.

// keepDashboard records m as its dashboard's newest message unless a newer
// one is already kept. h.mu must be held.
func (h *Hub) keepDashboard(m *schema.Message) {
	if old := h.dash[m.DashboardKey]; old == nil || !m.Pos.Less(old.Pos) {
		h.dash[m.DashboardKey] = m
	}
}

// SeedDashboards adds dashboards read from elsewhere than the live stream
// (a serve replica starting after they were published).
func (h *Hub) SeedDashboards(msgs []*schema.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		if m.DashboardKey != "" {
			h.keepDashboard(m)
		}
	}
}

// Dashboards returns the newest message of every dashboard, in key order.
func (h *Hub) Dashboards() []*schema.Message {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*schema.Message, 0, len(h.dash))
	for _, m := range h.dash {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DashboardKey < out[j].DashboardKey })
	return out
}

// dashboardsSince returns the dashboards p may see and the dashboard
// sequence they are current at: dashboard messages before it are
// superseded.
func (h *Hub) dashboardsSince(p *Principal) ([]*schema.Message, uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.dashboardsFor(p), h.dhead
}

// dashboardsFor returns the dashboards p may see, looked up by key so
// that a connection costs what it may see, not what exists; admins (few)
// scan them all. h.mu must be held.
func (h *Hub) dashboardsFor(p *Principal) []*schema.Message {
	var out []*schema.Message
	add := func(key string) {
		if m := h.dash[key]; m != nil && p.Allows(m) {
			out = append(out, m)
		}
	}
	var cs []int64
	if p.Role == RoleAdmin {
		add(schema.DashboardAdmin)
		for _, m := range h.dash {
			if m.HasCommittee {
				cs = append(cs, m.Committee)
			}
		}
	} else {
		for c := range p.Committees {
			cs = append(cs, c)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
	for _, c := range cs {
		add(schema.DashboardKey(schema.DashboardSupervisor, c))
	}
	if p.HasUser {
		add(schema.DashboardKey(schema.DashboardPersonal, p.UserID))
	}
	return out
}

// sendDashboards sends c the dashboards it may see.
func (c *client) sendDashboards(ctx context.Context, msgs []*schema.Message) error {
	p, f := c.principal.Load(), c.filter.Load()
	for _, m := range msgs {
		if p.Allows(m) && f.allows(m) {
			if err := c.send(ctx, m.JSON); err != nil {
				return err
			}
		}
	}
	return nil
}
