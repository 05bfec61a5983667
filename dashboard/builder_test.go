package dashboard

import (
	"slices"
	"testing"
)

// A round takes the dashboards named by changes before the backlog of an
// "every dashboard" round, at most its budget in all, and files the rest
// (each id once, in its tier) for the next rounds.
func TestPickTakesChangesFirstAndCarriesTheRest(t *testing.T) {
	live := map[int64]bool{7: true, 8: true}
	backlog := []int64{1, 2, 3, 7, 4}
	budget := 4
	var restLive, restBacklog map[int64]bool
	got := pick(&budget, live, backlog, &restLive, &restBacklog)
	if len(got) != 4 || !slices.Contains(got, 7) || !slices.Contains(got, 8) || budget != 0 {
		t.Fatalf("picked %v (budget left %d), want 7, 8 and two of the backlog", got, budget)
	}
	if len(restLive) != 0 || len(restBacklog) != 2 || restBacklog[7] {
		t.Fatalf("rest: live %v, backlog %v; want two backlog ids, 7 not among them", restLive, restBacklog)
	}
	if len(live) != 2 {
		t.Fatalf("pick modified the live set: %v", live)
	}

	// No budget left: everything carries over, in its tier.
	budget = 0
	restLive, restBacklog = nil, nil
	if got := pick(&budget, live, backlog, &restLive, &restBacklog); len(got) != 0 || len(restLive) != 2 || len(restBacklog) != 4 {
		t.Fatalf("with no budget: picked %v, rest %v / %v", got, restLive, restBacklog)
	}
}
