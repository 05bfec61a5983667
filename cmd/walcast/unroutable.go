package main

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/schema"
)

// unroutableLogEvery is how often the log repeats that one table's changes
// go to admins only for one reason: often enough to be seen, not once per
// row of a large update.
const unroutableLogEvery = time.Minute

// unroutable counts and reports the changes walcast could not place and
// sent to admins only (schema.Message.Unroutable): the metric for alerts,
// a rate-limited log line telling the operator what to fix.
type unroutable struct {
	log     *slog.Logger
	counter *prometheus.CounterVec // walcast_unroutable_changes_total{table,reason}

	mu     sync.Mutex
	logged map[[2]string]unroutableSeen // by table and reason
}

type unroutableSeen struct {
	at         time.Time // last log line
	suppressed int       // changes since it, not logged
}

func newUnroutable(log *slog.Logger, reg prometheus.Registerer) *unroutable {
	u := &unroutable{log: log, logged: map[[2]string]unroutableSeen{}}
	u.counter = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "walcast_unroutable_changes_total",
		Help: "Changes sent to admins only because walcast could not tell who may see them, by table and reason (unreadable_committee_id, unreadable_user_id, routing_columns_not_published, delete_without_routing_columns).",
	}, []string{"table", "reason"})
	reg.MustRegister(u.counter)
	return u
}

// note records one message that went to admins only for want of a scope.
func (u *unroutable) note(table string, m *schema.Message) {
	if u == nil || m.Unroutable == "" {
		return
	}
	u.counter.WithLabelValues(table, m.Unroutable).Inc()
	key := [2]string{table, m.Unroutable}
	now := time.Now()
	u.mu.Lock()
	seen := u.logged[key]
	if !seen.at.IsZero() && now.Sub(seen.at) < unroutableLogEvery {
		seen.suppressed++
		u.logged[key] = seen
		u.mu.Unlock()
		return
	}
	suppressed := seen.suppressed
	u.logged[key] = unroutableSeen{at: now}
	u.mu.Unlock()
	u.log.Warn("change sent to admins only: walcast cannot tell who may see it",
		"table", table, "reason", m.Unroutable, "fix", unroutableFix(table, m.Unroutable),
		"id", m.ID(), "more_since_last_log", suppressed)
}

// unroutableFix tells the operator what to change for each reason.
func unroutableFix(table, reason string) string {
	switch reason {
	case schema.UnroutableCommittee, schema.UnroutableOwner:
		col := schema.CommitteeColumn
		if reason == schema.UnroutableOwner {
			col = schema.OwnerColumn
		}
		return "store the id as an exact integer in " + table + "." + col + " (an integer column, or numeric/text holding digits only: not 3.00, a uuid or a code); NULL means no scope"
	case schema.UnroutableMissingColumns:
		return "publish all of " + table + "'s columns: the publication's column list leaves out committee_id or user_id (walcast check prints the ALTER PUBLICATION to run)"
	case schema.UnroutableKeyOnlyDelete:
		return "ALTER TABLE " + table + " REPLICA IDENTITY FULL; so that deleted rows carry committee_id and user_id"
	}
	return "run walcast check"
}
