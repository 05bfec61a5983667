package broadcast

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/walcast/walcast/schema"
)

// dashboardKey is the hash holding the newest message of each dashboard,
// next to the stream.
func (b *RedisBus) dashboardKey() string { return b.key + ":dashboards" }

// storedDashboard is a dashboard message in the dashboards hash.
type storedDashboard struct {
	ID        string          `json:"id"`
	Committee *int64          `json:"c,omitempty"`
	Owner     *int64          `json:"u,omitempty"`
	AdminOnly bool            `json:"a,omitempty"`
	Frame     json.RawMessage `json:"m"`
}

func encodeDashboard(m *schema.Message) string {
	d := storedDashboard{ID: m.Pos.String(), AdminOnly: m.AdminOnly, Frame: m.JSON}
	if m.HasCommittee {
		d.Committee = &m.Committee
	}
	if m.HasOwner {
		d.Owner = &m.Owner
	}
	b, _ := json.Marshal(d)
	return string(b)
}

func decodeDashboard(key, v string) (*schema.Message, error) {
	var d storedDashboard
	if err := json.Unmarshal([]byte(v), &d); err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", key, err)
	}
	pos, err := schema.ParsePosition(d.ID)
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", key, err)
	}
	m := &schema.Message{Pos: pos, Type: schema.TypeDashboard, DashboardKey: key, AdminOnly: d.AdminOnly, JSON: d.Frame}
	if d.Committee != nil {
		m.Committee, m.HasCommittee = *d.Committee, true
	}
	if d.Owner != nil {
		m.Owner, m.HasOwner = *d.Owner, true
	}
	return m, nil
}

// seedDashboards gives hub the newest dashboards stored in Redis.
func (b *RedisBus) seedDashboards(ctx context.Context, hub *Hub) error {
	all, err := b.rdb.HGetAll(ctx, b.dashboardKey()).Result()
	if err != nil {
		return fmt.Errorf("read %s: %w", b.dashboardKey(), err)
	}
	msgs := make([]*schema.Message, 0, len(all))
	for k, v := range all {
		m, err := decodeDashboard(k, v)
		if err != nil {
			b.log.Warn("skipping an unreadable dashboard", "err", err)
			continue
		}
		msgs = append(msgs, m)
	}
	hub.SeedDashboards(msgs)
	return nil
}
