// Package dashboard keeps the election dashboards current: it learns from
// committed changes which dashboards they affect, recomputes those with
// aggregate queries on the database, at most once per dashboard per
// interval however many changes arrive, and hands the results on as
// dashboard_update messages.
//
// Three kinds exist (schema.DashboardPersonal, DashboardSupervisor,
// DashboardAdmin): a user's own guarantees by status and the attendance
// they marked; a committee's guarantees by status, attendance against its
// electors and votes by candidate; and the same election-wide. Each
// message carries the scope the broadcast package delivers by: the owner,
// the committee, or admins only.
//
// A round emits at most Config.Batch dashboards (admin, then committees',
// then users'); the rest of a burst, such as every user's dashboard after
// a TRUNCATE, follows in later rounds. NULLs in the tables are counted or
// skipped (see queries.go), and a dashboard whose queries fail is left out
// and counted while the others are sent.
//
// Start with Builder: Note is called with every stored transaction, Run
// recomputes and emits.
package dashboard
