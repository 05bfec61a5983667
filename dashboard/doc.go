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
// Start with Builder: Note is called with every stored transaction, Run
// recomputes and emits.
package dashboard
