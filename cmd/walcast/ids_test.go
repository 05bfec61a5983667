package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Ids above 2^53 are exact end to end, from PostgreSQL bigint columns
// through routing and dashboards to the token: user 2^53+1 and user 2^53
// (what 2^53+1 becomes as a float64) are two people, and neither gets the
// other's rows or personal dashboard.
func TestIDsAboveTwoToThe53FromDatabaseToClient(t *testing.T) {
	const (
		bigA = int64(1)<<53 + 1
		bigB = int64(1) << 53
	)
	pg := electionDB(t)
	pg.Exec(t, fmt.Sprintf(`INSERT INTO committee (id, code, name) VALUES (%d, 'CA', 'Big A'), (%d, 'CB', 'Big B')`, bigA, bigB))
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	a := dial(t, app.addr, token(t, bigA, "", bigA), "")
	b := dial(t, app.addr, token(t, bigB, "", bigB), "")
	pg.Exec(t, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES
		(%d, %d, 'row of A'), (%d, %d, 'row of B'), (1, %d, 'A elsewhere'), (1, %d, 'B elsewhere')`, bigA, bigA, bigB, bigB, bigA, bigB))

	// Each reads until it has its two rows and both of its dashboards
	// with them counted; anything of the other fails.
	read := func(c *wsClient, me int64, other int64, mine ...string) {
		t.Helper()
		rows := map[string]bool{}
		dash := map[string]bool{}
		deadline := time.After(20 * time.Second)
		for len(rows) < len(mine) || len(dash) < 2 {
			select {
			case f, ok := <-c.frames:
				if !ok {
					t.Fatalf("connection closed: %v", <-c.closed)
				}
				dec := json.NewDecoder(bytes.NewReader(f))
				dec.UseNumber()
				var m struct {
					Type          string
					DashboardType string      `json:"dashboard_type"`
					UserID        json.Number `json:"user_id"`
					CommitteeID   json.Number `json:"committee_id"`
					Data          struct {
						UserID      json.Number `json:"user_id"`
						CommitteeID json.Number `json:"committee_id"`
						ElectorName string      `json:"elector_name"`
						Guarantees  struct{ Total int64 }
					}
				}
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("frame %s: %v", f, err)
				}
				if strings.Contains(string(f), fmt.Sprint(other)) {
					t.Errorf("user %d received %s", me, f)
				}
				switch m.Type {
				case "guarantee_update":
					if m.Data.UserID.String() != fmt.Sprint(me) {
						t.Errorf("user %d received %s", me, f)
					}
					rows[m.Data.ElectorName] = true
				case "dashboard_update":
					key := m.DashboardType + ":" + m.UserID.String() + m.CommitteeID.String()
					if key != fmt.Sprintf("personal:%d", me) && key != fmt.Sprintf("supervisor:%d", me) {
						t.Errorf("user %d received dashboard %s", me, key)
					}
					if m.Data.Guarantees.Total > 0 {
						dash[key] = true
					}
				}
			case <-deadline:
				t.Fatalf("user %d: rows %v, dashboards %v after 20 s", me, rows, dash)
			}
		}
		for _, r := range mine {
			if !rows[r] {
				t.Errorf("user %d did not receive %q", me, r)
			}
		}
	}
	read(a, bigA, bigB, "row of A", "A elsewhere")
	read(b, bigB, bigA, "row of B", "B elsewhere")
}
