// Synced collections of broadcast/web/client.js (sync: true) against a real
// walcast with Redis: clients that sync at different moments of a burst of
// inserts, updates and deletes end with exactly the rows of their scope
// that SELECT returns, across a restart of walcast, a re-sync and a
// TRUNCATE. The frame-by-frame rules: collections.test.js. See harness.js
// for how to run them.
import { test } from "node:test";
import assert from "node:assert/strict";

import { WalcastClient } from "../client.js";
import { WS_URL, label, query, skip, sql, token, waitFor, walcast } from "./harness.js";

function syncClient(t, options) {
  const c = new WalcastClient({ url: WS_URL, sync: true, initialDelay: 100, maxDelay: 1000, ...options });
  t.after(() => c.close());
  return c;
}

// A deterministic pseudo-random sequence, so a failure can be replayed.
function rng(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

// burst commits n transactions of inserts, updates and deletes of
// guarantees, vote counts and attendance across committees 1-3, some rows
// owned by user 2, and now and then moves a guarantee to another committee
// (it leaves a supervisor's scope: walcast sends a deleted frame with
// left: true).
async function burst(p, n, rand) {
  for (let i = 0; i < n; i++) {
    const c = 1 + rand(3), owner = rand(5) === 0 ? 2 : 7 + rand(3);
    const stmts = [
      `INSERT INTO guarantee (committee_id, user_id, elector_name, status) VALUES (${c}, ${owner}, '${p}-${i}', '${["strong", "medium", "weak"][rand(3)]}');`,
      `UPDATE guarantee SET status = '${["strong", "medium", "weak"][rand(3)]}', elector_name = elector_name || '+' WHERE id = (SELECT id FROM guarantee WHERE elector_name LIKE '${p}-%' ORDER BY md5(id::text || '${i}') LIMIT 1);`,
      `INSERT INTO vote_count (committee_id, candidate_id, votes) VALUES (${c}, ${1 + rand(2)}, ${rand(100)})
         ON CONFLICT (committee_id, candidate_id) DO UPDATE SET votes = EXCLUDED.votes;`,
      `INSERT INTO attendance (committee_id, elector_id, user_id, attended) VALUES (${c}, ${rand(40)}, ${owner}, ${rand(4) !== 0})
         ON CONFLICT (committee_id, elector_id) DO UPDATE SET attended = NOT attendance.attended;`,
    ];
    if (rand(3) === 0) stmts.push(`DELETE FROM guarantee WHERE id = (SELECT id FROM guarantee WHERE elector_name LIKE '${p}-%' ORDER BY md5(id::text || 'd${i}') LIMIT 1);`);
    if (rand(8) === 0) stmts.push(`DELETE FROM attendance WHERE id = (SELECT min(id) FROM attendance);`);
    if (rand(4) === 0) stmts.push(`UPDATE guarantee SET committee_id = ${1 + rand(3)} WHERE id = (SELECT id FROM guarantee WHERE elector_name LIKE '${p}-%' ORDER BY md5(id::text || 'm${i}') LIMIT 1);`);
    await sql("BEGIN;" + stmts.join("") + "COMMIT;");
  }
}

// scopeSQL is the WHERE clause of what a token and subscription may see.
function scopeSQL({ role, user, committees, subscribed }) {
  const conds = [];
  if (role !== "admin") conds.push(`(committee_id = ANY('{${committees.join(",")}}') OR user_id = ${user})`);
  if (subscribed) conds.push(`committee_id = ANY('{${subscribed.join(",")}}')`);
  return conds.length ? "WHERE " + conds.join(" AND ") : "";
}

// expected and actual render both sides as sorted lines, so a difference
// names the rows.
async function expected(scope) {
  const w = scopeSQL(scope);
  const [g, v, a] = await Promise.all([
    query(`SELECT id, committee_id, user_id, status, elector_name FROM guarantee ${w}`),
    query(`SELECT id, committee_id, candidate_id, votes FROM vote_count ${w.replace(/ OR user_id = \d+/, "")}`),
    query(`SELECT id, committee_id, elector_id, attended FROM attendance ${w}`),
  ]);
  return {
    guarantee: g.map((r) => `[${r.id}] ${r.committee_id} ${r.user_id} ${r.status} ${r.elector_name}`).sort(),
    vote_count: v.map((r) => `[${r.id}] ${r.committee_id} ${r.candidate_id} ${r.votes}`).sort(),
    attendance: a.map((r) => `[${r.id}] ${r.committee_id} ${r.elector_id} ${r.attended}`).sort(),
  };
}

function actual(c, tables = ["guarantee", "vote_count", "attendance"]) {
  const lines = (name, f) => [...(c.table(name) ?? [])].map(([k, d]) => `${k} ${f(d)}`).sort();
  const out = {
    guarantee: lines("guarantee", (d) => `${d.committee_id} ${d.user_id} ${d.status} ${d.elector_name}`),
    vote_count: lines("vote_count", ({ vote_count: d }) => `${d.committee_id} ${d.candidate_id} ${d.votes}`),
    attendance: lines("attendance", (d) => `${d.committee_id} ${d.elector_id} ${d.attended}`),
  };
  return Object.fromEntries(tables.map((k) => [k, out[k]]));
}

// converges waits until the client's collections equal what SELECT returns.
async function converges(c, scope, what, tables) {
  let want, got;
  await waitFor(async () => {
    if (!c.synced) return false;
    want = await expected(scope);
    if (tables) want = Object.fromEntries(tables.map((k) => [k, want[k]]));
    got = actual(c, tables);
    return JSON.stringify(want) === JSON.stringify(got);
  }, { timeout: 30000, interval: 200, what, detail: () => JSON.stringify({ synced: c.synced, unavailable: c.unavailable, stats: c.stats, want, got }).slice(0, 4000) });
}

test("sync: clients synced before, during and after a burst hold exactly the rows of their scope", { skip, timeout: 120000 }, async (t) => {
  const p = label("sync");
  const rand = rng(15);
  const admin = { role: "admin", user: 1 };
  const supervisor = { role: "supervisor", user: 2, committees: [1] };
  const early = syncClient(t, { token: await token(admin) });
  await waitFor(() => early.synced, { what: "the first sync", timeout: 20000, detail: () => JSON.stringify(early.stats) });
  assert.deepEqual(early.unavailable, [], "walcast keeps state for every election table");

  await burst(p, 15, rand);
  // Opened mid-burst: a supervisor, and an admin narrowed to guarantees of committee 2.
  const sup = syncClient(t, { token: await token(supervisor) });
  const narrow = syncClient(t, { token: await token(admin), subscribe: { types: ["guarantee_update"], committees: [2] } });
  const writing = burst(p, 15, rand);
  await waitFor(() => sup.synced && narrow.synced, { what: "the mid-burst syncs", timeout: 20000 });
  await writing;
  await burst(p, 10, rand);
  const late = syncClient(t, { token: await token(admin) });

  await converges(early, admin, "the early admin equals the database");
  await converges(late, admin, "the late admin equals the database");
  await converges(sup, supervisor, "the supervisor equals its scope");
  await converges(narrow, { ...admin, subscribed: [2] }, "the narrowed admin equals its subscription", ["guarantee"]);
  assert.deepEqual([...narrow.tables.keys()], ["public.guarantee"], "only the subscribed type is synced");
  const all = actual(late), some = actual(sup);
  assert.ok(all.guarantee.filter((l) => l.includes(p)).length >= 20, "the burst's rows are there");
  assert.ok(some.guarantee.length > 0 && some.guarantee.length < all.guarantee.length, "the supervisor holds a part");
  assert.ok(some.guarantee.every((l) => / 1 \d+ /.test(l) || / \d+ 2 /.test(l)), "committee 1 or user 2 only");
  // Versions are ids, and the same row has the same version everywhere.
  const g = early.table("guarantee");
  for (const [key] of late.table("guarantee")) assert.equal(late.table("guarantee").version(key), g.version(key), key);
  assert.ok(early.stats.delivered > 0 && early.stats.syncs === 1, JSON.stringify(early.stats));
});

test("sync: walcast killed and restarted: the synced client resumes and stays equal to the database", { skip, timeout: 90000 }, async (t) => {
  const p = label("sync-restart");
  const admin = { role: "admin", user: 1 };
  const c = syncClient(t, { token: await token(admin) });
  await waitFor(() => c.synced, { what: "synced", timeout: 20000 });
  await walcast.kill();
  await waitFor(() => c.status === "reconnecting", { what: "reconnecting" });
  await burst(p, 5, rng(7));
  await walcast.start();
  await burst(p, 5, rng(8));
  await converges(c, admin, "the collection after the restart");
  assert.equal(c.stats.syncs, 1, "it resumed from its last id: no second sync");
});

test("sync: resync() refills the collections; TRUNCATE empties a table", { skip, timeout: 60000 }, async (t) => {
  const admin = { role: "admin", user: 1 };
  const c = syncClient(t, { token: await token(admin) });
  await waitFor(() => c.synced, { what: "synced", timeout: 20000 });
  const attendance = c.table("attendance");
  const rows = [];
  c.on("row", (e) => e.table === "public.attendance" && rows.push(e.op));
  await sql(`TRUNCATE attendance; INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (1, 1, 7), (2, 2, 7);`);
  await converges(c, admin, "the truncated table", ["attendance"]);
  assert.equal(c.table("attendance").size, 2);
  assert.ok(rows.includes("removed") && rows.filter((op) => op === "added").length === 2, rows.join(","));

  c.resync();
  assert.equal(c.synced, false);
  await waitFor(() => c.stats.syncs === 2 && c.synced, { what: "the second sync" });
  assert.equal(c.table("attendance"), attendance, "the same collection object, refilled");
  await converges(c, admin, "after resync()");
});

// LostPosition is a WebSocket whose reconnects ask for an id walcast never
// had, as after a disconnect longer than its history: walcast answers
// resync_required and the client must sync again by itself.
class LostPosition extends WebSocket {
  constructor(url) {
    const u = new URL(url);
    if (u.searchParams.has("since")) u.searchParams.set("since", "99999999999999-0");
    super(u.href);
  }
}

test("sync: a reconnect whose resume walcast cannot serve syncs again, by itself", { skip, timeout: 60000 }, async (t) => {
  const admin = { role: "admin", user: 1 };
  const c = syncClient(t, { token: await token(admin), WebSocket: LostPosition });
  const resyncs = [];
  c.on("resync_required", (m) => resyncs.push(m.reason));
  await waitFor(() => c.synced, { what: "synced", timeout: 20000 });
  const p = label("sync-lost");
  await sql(`INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (2, 7, '${p}-before');`);
  await waitFor(() => c.rows("guarantee").some((g) => g.elector_name === `${p}-before`), { what: "the row before" });
  await walcast.kill();
  await sql(`INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (2, 7, '${p}-down');
    DELETE FROM guarantee WHERE elector_name = '${p}-before';`);
  await walcast.start();
  await converges(c, admin, "the collection after the second sync");
  assert.equal(c.stats.syncs, 2, JSON.stringify(c.stats));
  assert.match(resyncs.join(), /position/);
  assert.deepEqual(c.rows("guarantee").filter((g) => g.elector_name.startsWith(p)).map((g) => g.elector_name), [`${p}-down`]);
});

test("sync: subscription changes beyond walcast's sync rate are rate limited, then synced after the wait", { skip, timeout: 60000 }, async (t) => {
  const c = syncClient(t, { token: await token({ role: "admin", user: 1 }), subscribe: { types: ["guarantee_update"], committees: [1] } });
  const errors = [];
  c.on("error", (e) => errors.push(e.code));
  await waitFor(() => c.synced, { what: "the first sync", timeout: 20000 });
  // walcast allows 3 syncs in a burst, then one every 5 seconds.
  for (const committees of [[2], [3]]) {
    c.subscribe({ types: ["guarantee_update"], committees });
    await waitFor(() => c.synced, { what: `the sync of committees ${committees}`, timeout: 20000 });
  }
  c.subscribe({ types: ["guarantee_update"], committees: [1, 2] });
  await waitFor(() => errors.includes("rate_limited"), { what: "rate_limited", timeout: 10000 });
  assert.equal(c.synced, false);
  await waitFor(() => c.synced, { what: "the sync after the wait", timeout: 30000 });
  assert.equal(c.stats.syncs, 4);
  await converges(c, { role: "admin", user: 1, subscribed: [1, 2] }, "committees 1 and 2", ["guarantee"]);
});
