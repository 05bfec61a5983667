package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// NULLs in the tracked tables (nullable columns of an application's own
// tables, mapped with --tables) are counted or skipped, never a reason to
// stop: and a dashboard whose queries fail (votes too large for a bigint
// in committee 2) is left out, counted and logged, while every other
// dashboard keeps arriving, live, at a real WebSocket client.
func TestDashboardsSurviveNullsAndFailingDashboards(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `CREATE TABLE app_guarantee (id serial PRIMARY KEY, committee_id bigint, user_id bigint, elector_name text, status text);
		CREATE TABLE app_votes (id serial PRIMARY KEY, committee_id bigint, candidate_id bigint, votes numeric);
		INSERT INTO app_guarantee (committee_id, user_id, elector_name, status) VALUES
			(1, 7, 'a', 'strong'), (1, 7, 'b', NULL), (NULL, 7, 'c', 'weak'), (1, NULL, 'd', 'medium'), (2, 8, 'e', 'strong');
		INSERT INTO app_votes (committee_id, candidate_id, votes) VALUES
			(1, 1, 10), (1, NULL, 5), (1, 2, NULL), (NULL, 1, 3), (2, 1, 1e30)`)
	app := startApp(t, testConfig(t, pg.URL(), "--tables", "app_guarantee=guarantee,attendance,app_votes=vote_count"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 7, "", 1, 2, 3), "")

	saw := map[string]*dashboardFrame{}
	c.dashboard(t, 10*time.Second, func(d *dashboardFrame) bool {
		saw[d.key()] = d
		return saw["personal:7"] != nil && saw["supervisor:1"] != nil && saw["supervisor:3"] != nil
	})
	// NULL status counts as unset; NULL committee_id is in no committee's
	// dashboard, NULL user_id in no one's.
	if g := saw["personal:7"].Data.Guarantees; g.Strong != 1 || g.Weak != 1 || g.Unset != 1 || g.Total != 3 {
		t.Errorf("user 7's dashboard: %+v", g)
	}
	// NULL candidate_id skipped, NULL votes counted as 0.
	if sup := saw["supervisor:1"]; sup.Data.Guarantees.Strong != 1 || sup.Data.Guarantees.Medium != 1 || sup.Data.Guarantees.Unset != 1 ||
		sup.Data.Guarantees.Total != 3 || sup.Data.TotalVotes != 10 || len(sup.Data.Votes) != 2 {
		t.Errorf("committee 1's dashboard: %+v", sup.Data)
	}
	if saw["supervisor:2"] != nil {
		t.Errorf("committee 2's dashboard arrived though its votes do not fit a bigint: %+v", saw["supervisor:2"].Data)
	}

	// Committee 2's and the admin dashboard cannot be computed: counted.
	eventually(t, 10*time.Second, "failures counted", func() bool {
		f := app.app.Dashboards().Failed
		return f["supervisor"] >= 1 && f["admin"] >= 1
	})
	if v, ok := metric(t, app.addr, `walcast_dashboard_failures_total{dashboard_type="supervisor"}`); !ok || v < 1 {
		t.Errorf("walcast_dashboard_failures_total{supervisor} = %v, %v; want at least 1", v, ok)
	}

	// Rounds go on: the next change's dashboards arrive.
	pg.Exec(t, `INSERT INTO app_guarantee (committee_id, user_id, elector_name, status) VALUES (1, 7, 'f', NULL), (NULL, NULL, 'g', NULL)`)
	personal, committee := false, false
	c.dashboard(t, 10*time.Second, func(d *dashboardFrame) bool {
		personal = personal || (d.key() == "personal:7" && d.Data.Guarantees.Unset == 2 && d.Data.Guarantees.Total == 4)
		committee = committee || (d.key() == "supervisor:1" && d.Data.Guarantees.Unset == 2)
		return personal && committee
	})
	// A fixed row heals the failed dashboard at its next change.
	pg.Exec(t, `UPDATE app_votes SET votes = 4 WHERE committee_id = 2`)
	c.dashboard(t, 10*time.Second, func(d *dashboardFrame) bool {
		return d.key() == "supervisor:2" && d.Data.TotalVotes == 4
	})
	if got := app.app.Dashboards().Failed["personal"]; got != 0 {
		t.Errorf("%d personal dashboards failed, want none", got)
	}
}

// Ids are exact 64-bit integers from the row to the client: the personal
// dashboard of user 2^53+1 is keyed, routed and encoded by that id, and
// never reaches user 2^53 (which a float64 would confuse it with).
func TestDashboardIDsAboveTwoToThe53(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	// String claims: exact whatever the JSON number decoding of claims.
	mint := func(user string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"token_type": "access", "user_id": user, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	big := dial(t, app.addr, mint("9007199254740993"), "")
	near := dial(t, app.addr, mint("9007199254740992"), "")
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name, status) VALUES (1, 9007199254740993, 'big', 'strong')`)
	for {
		select {
		case b := <-big.frames:
			var f struct {
				Type          string
				DashboardType string      `json:"dashboard_type"`
				UserID        json.Number `json:"user_id"`
			}
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			if err := d.Decode(&f); err != nil {
				t.Fatal(err)
			}
			if f.Type != "dashboard_update" {
				continue
			}
			if f.DashboardType != "personal" || f.UserID != "9007199254740993" {
				t.Fatalf("user 9007199254740993 received %s", b)
			}
			// The neighbouring id gets no dashboard.
			deadline := time.After(time.Second)
			for {
				select {
				case b := <-near.frames:
					if bytes.Contains(b, []byte(`"dashboard_update"`)) {
						t.Fatalf("user 9007199254740992 received %s", b)
					}
				case <-deadline:
					return
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("user 9007199254740993 received no personal dashboard")
		}
	}
}
