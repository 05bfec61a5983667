// Unit tests of the synced collections of broadcast/web/client.js (option
// sync: true), with a scripted socket that plays walcast's side of the
// protocol frame by frame: the order of frames that a real server produces
// only by chance (a version newer than the change that follows it, a
// resync_required in the middle, a rate-limited sync) is written out here.
// The same rules against a real walcast: sync.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";

import { SyncedTable, WalcastClient } from "../client.js";
import { waitFor } from "./harness.js";
import { ScriptedSocket, jwt } from "./scripted.js";

const TOKEN = jwt({ user_id: 1, role: "admin" });

// connect makes a sync client on a scripted socket, opens it and answers
// welcome; it returns the client, its socket and the row events it raised.
async function connect(t, options = {}) {
  const before = ScriptedSocket.all.length;
  const c = new WalcastClient({ url: "ws://walcast.test/ws", token: TOKEN, sync: true, WebSocket: ScriptedSocket, initialDelay: 5, maxDelay: 20, ...options });
  t.after(() => c.close());
  const events = [];
  c.on("row", (e) => events.push(`${e.op} ${e.key}${e.row ? " " + e.row.name : ""}`));
  const ws = await waitFor(() => ScriptedSocket.all[before], { what: "a socket" });
  ws.open();
  ws.push({ type: "welcome", position: "10-0" });
  return { c, ws, events };
}

const G = "public.guarantee";
const row = (id, name, version) => ({ key: `[${id}]`, version, data: { id, name } });
const change = (id, action, key, name) =>
  ({ id, type: "guarantee_update", action, table: G, key: key === undefined ? undefined : `[${key}]`, data: name === undefined ? {} : { id: key, name } });
const names = (c, table = G) => Object.fromEntries([...c.table(table)].map(([k, d]) => [k, d.name]));

test("sync: state frames fill a collection at state_end; changes apply only when newer than the row", async (t) => {
  const { c, ws, events } = await connect(t);
  assert.equal(ws.url.searchParams.get("since"), null, "a sync does not resume first");
  assert.deepEqual(ws.frames("sync"), [{ type: "sync" }]);
  assert.equal(ws.frames("subscribe").length, 0);

  ws.push({ type: "state", table: G, message_type: "guarantee_update", rows: [row(1, "a", "11-0"), row(2, "b", "15-0")] });
  assert.equal(c.table(G), undefined, "nothing before state_end");
  assert.equal(c.synced, false);
  ws.push({ type: "state", table: G, message_type: "guarantee_update", rows: [row(3, "c", "20-0")] });
  const synced = [];
  c.on("synced", (m) => synced.push(m));
  ws.push({ type: "state_end", position: "12-0", tables: [G], unavailable: [{ table: "public.notes", reason: "no primary key" }] });
  assert.equal(c.synced, true);
  assert.deepEqual(names(c), { "[1]": "a", "[2]": "b", "[3]": "c" });
  assert.equal(c.table("guarantee"), c.table(G), "the table by its short name");
  assert.equal(c.table(G).type, "guarantee_update");
  assert.deepEqual(c.unavailable, [{ table: "public.notes", reason: "no primary key" }]);
  assert.deepEqual(synced.map((m) => [m.position, m.tables]), [["12-0", [G]]]);
  assert.equal(c.lastId, "12-0", "resume continues after the state's position");

  // Out of order: the state already holds row 2 at 15-0 and row 3 at 20-0.
  ws.push(change("13-0", "updated", 2, "b-old"), change("14-0", "updated", 1, "a2"), change("15-0", "updated", 2, "b-same"));
  assert.deepEqual(names(c), { "[1]": "a2", "[2]": "b", "[3]": "c" });
  // A delete older than the row (row 3 was deleted, then inserted again at 20-0) leaves it.
  ws.push(change("16-0", "deleted", 3, "c"), change("17-0", "created", 4, "d"));
  assert.deepEqual(names(c), { "[1]": "a2", "[2]": "b", "[3]": "c", "[4]": "d" });
  ws.push(change("20-0", "updated", 3, "c-same"), change("21-0", "deleted", 3, "c"), change("21-1", "updated", 2, "b2"));
  assert.deepEqual(names(c), { "[1]": "a2", "[2]": "b2", "[4]": "d" });
  assert.equal(c.table(G).version("[2]"), "21-1");
  assert.deepEqual([...c.table(G).keys()], ["[1]", "[4]", "[2]"], "in version order");
  assert.deepEqual(events, ["changed [1] a2", "added [4] d", "removed [3]", "changed [2] b2"]);
  // Every change was still delivered as an event, once.
  assert.equal(c.stats.delivered, 8);
});

test("sync: versions compare as 64-bit (LSN, seq) pairs, not as text or Numbers", async (t) => {
  const { c, ws } = await connect(t);
  const big = "18446744073709551614";
  ws.push({ type: "state", table: G, rows: [row(1, "a", `${big}-10`), row(2, "b", "100-0"), row(3, "c", "20-0")] });
  ws.push({ type: "state_end", position: "20-0", tables: [G] });
  assert.deepEqual([...c.table(G).keys()], ["[3]", "[2]", "[1]"], "a sync's rows in version order");
  ws.push(change("99-1", "updated", 2, "b-old")); // older than 100-0, though "99-1" > "100-0" as text
  ws.push(change("100-0", "updated", 3, "c2")); // newer than 20-0, though "100-0" < "20-0" as text
  ws.push(change(`${big}-9`, "updated", 1, "a-old")); // seq 9 < 10
  ws.push(change(`${big}-11`, "updated", 1, "a2"));
  ws.push(change("18446744073709551615-0", "updated", 2, "b3"));
  assert.deepEqual(names(c), { "[1]": "a2", "[2]": "b3", "[3]": "c2" });
  assert.equal(c.table(G).version("[1]"), `${big}-11`);
  const tab = new SyncedTable("public.x");
  assert.equal(tab.size, 0);
  assert.deepEqual(tab.rows(), []);
});

test("sync: truncated clears the rows older than it and keeps newer ones", async (t) => {
  const { c, ws, events } = await connect(t);
  // Row 5 was inserted at 30-0, after a TRUNCATE at 25-0 that the replay still holds.
  ws.push({ type: "state", table: G, rows: [row(5, "e", "30-0")] });
  ws.push({ type: "state_end", position: "20-0", tables: [G] });
  ws.push(change("21-0", "created", 1, "a")); // gone by the TRUNCATE
  assert.deepEqual(names(c), { "[1]": "a", "[5]": "e" });
  ws.push(change("25-0", "truncated"));
  assert.deepEqual(names(c), { "[5]": "e" });
  ws.push(change("30-0", "created", 5, "e"), change("31-0", "created", 6, "f"));
  assert.deepEqual(names(c), { "[5]": "e", "[6]": "f" });
  assert.deepEqual(events, ["added [1] a", "removed [1]", "added [6] f"]);
});

test("sync: resync_required fills the collections again; the sync replaces a table and drops unlisted ones", async (t) => {
  const { c, ws } = await connect(t);
  const A = "public.attendance";
  ws.push({ type: "state", table: G, rows: [row(1, "a", "11-0"), row(2, "b", "11-0")] });
  ws.push({ type: "state", table: A, message_type: "attendance_update", rows: [{ key: "[9]", version: "11-0", data: { id: 9 } }] });
  ws.push({ type: "state_end", position: "11-0", tables: [G, A] });
  const table = c.table(G);
  const rows = table.rows();
  assert.equal(table.rows(), rows, "rows() is the same array until a change");

  ws.push({ type: "resync_required", reason: "position is older than the history kept", position: "50-0" });
  assert.equal(c.synced, false);
  assert.deepEqual(ws.frames("sync").length, 2, "a sync frame at once");
  // Meanwhile (before walcast reads the sync frame) a change still applies.
  ws.push(change("51-0", "updated", 1, "a-live"));
  assert.equal(c.table(G).get("[1]").name, "a-live");
  ws.push({ type: "state", table: G, rows: [row(1, "a-live", "51-0"), row(3, "c", "40-0")] });
  ws.push({ type: "state_end", position: "51-0", tables: [G], unavailable: [{ table: A, reason: "state off" }] });
  assert.equal(c.synced, true);
  assert.equal(c.table(G), table, "the same collection object, refilled");
  assert.deepEqual(names(c), { "[1]": "a-live", "[3]": "c" }, "row 2 is gone: the state replaced the table");
  assert.notEqual(table.rows(), rows);
  assert.equal(c.table(A), undefined, "an unlisted table is dropped");
  assert.deepEqual(c.unavailable, [{ table: A, reason: "state off" }]);
  // A change of an unavailable table makes no collection.
  ws.push({ id: "52-0", type: "attendance_update", action: "created", table: A, key: "[10]", data: { id: 10 } });
  assert.equal(c.table(A), undefined);
});

test("sync: a table left out of state_end (no rows then) starts with its first change", async (t) => {
  const { c, ws } = await connect(t);
  ws.push({ type: "state_end", position: "10-0", tables: [] });
  ws.push(change("11-0", "created", 1, "a"));
  assert.deepEqual(names(c), { "[1]": "a" });
  ws.push({ id: "12-0", type: "dashboard_update", action: "updated", table: "", data: {} });
  assert.deepEqual([...c.tables.keys()], [G], "a change without key makes no collection");
});

test("sync: a disconnect during a sync drops its rows and syncs again; after a sync, reconnects resume", async (t) => {
  const { c, ws } = await connect(t);
  ws.push({ type: "state", table: G, rows: [row(1, "a", "11-0")] });
  ws.drop();
  const ws2 = await waitFor(() => ScriptedSocket.all.at(-1) !== ws && ScriptedSocket.all.at(-1), { what: "a reconnect" });
  assert.equal(ws2.url.searchParams.get("since"), null);
  ws2.open();
  assert.deepEqual(ws2.frames("sync"), [{ type: "sync" }]);
  ws2.push({ type: "state", table: G, rows: [row(2, "b", "12-0")] });
  ws2.push({ type: "state_end", position: "12-0", tables: [G] });
  assert.deepEqual(names(c), { "[2]": "b" }, "the rows of the cut sync are not kept");
  ws2.push(change("13-0", "created", 3, "c"));

  ws2.drop();
  const ws3 = await waitFor(() => ScriptedSocket.all.at(-1) !== ws2 && ScriptedSocket.all.at(-1), { what: "a second reconnect" });
  assert.equal(ws3.url.searchParams.get("since"), "13-0", "a synced client resumes");
  ws3.open();
  assert.equal(ws3.frames("sync").length, 0);
  assert.equal(c.synced, true);
  // The replay keeps the collection current.
  ws3.push({ type: "welcome", position: "14-0" }, change("14-0", "deleted", 2, "b"));
  assert.deepEqual(names(c), { "[3]": "c" });
  // A resume walcast cannot serve: a sync on the same connection.
  ws3.push({ type: "resync_required", reason: "position is older than the history kept", position: "99-0" });
  assert.equal(ws3.frames("sync").length, 1);
});

test("sync: subscribe sends a sync with the new scope, one at a time", async (t) => {
  const { c, ws } = await connect(t, { subscribe: { types: ["guarantee_update"] } });
  assert.equal(ws.url.searchParams.get("types"), "guarantee_update");
  assert.deepEqual(ws.frames("sync"), [{ type: "sync", types: ["guarantee_update"] }]);
  c.subscribe({ types: ["guarantee_update"], committees: [1] });
  c.subscribe({ types: ["guarantee_update"], committees: [2] });
  assert.equal(ws.frames("sync").length, 1, "the second waits for the first's state_end");
  ws.push({ type: "state", table: G, rows: [row(1, "a", "11-0")] });
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  assert.equal(c.synced, false, "another sync follows");
  assert.deepEqual(ws.frames("sync").at(-1), { type: "sync", types: ["guarantee_update"], committees: [2] });
  assert.equal(ws.frames("sync").length, 2);
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  assert.equal(c.synced, true);
  assert.deepEqual(names(c), {});
  // Without sync: true the client neither syncs nor keeps collections.
  const plain = new WalcastClient({ url: "ws://walcast.test/ws", token: TOKEN, WebSocket: ScriptedSocket });
  t.after(() => plain.close());
  const pws = await waitFor(() => ScriptedSocket.all.at(-1) !== ws && ScriptedSocket.all.at(-1), { what: "a socket" });
  pws.open();
  assert.equal(pws.frames("sync").length, 0);
  assert.equal(plain.synced, false);
  assert.throws(() => plain.resync(), TypeError);
});

test("sync: a rate-limited sync is sent again after a backoff", async (t) => {
  const { c, ws } = await connect(t);
  const errors = [];
  c.on("error", (e) => errors.push(e.code));
  ws.push({ type: "error", code: "rate_limited", message: "too many sync frames: retry in 1s" });
  assert.deepEqual(errors, ["rate_limited"]);
  assert.equal(ws.frames("sync").length, 1);
  await waitFor(() => ws.frames("sync").length === 2, { timeout: 4000, what: "the sync sent again" });
  ws.push({ type: "state_end", position: "10-0", tables: [] });
  assert.equal(c.synced, true);
});

test("auth: a rate-limited refresh is sent again when walcast says", async (t) => {
  let n = 0;
  const exp = Math.floor(Date.now() / 1000) + 4;
  const { ws } = await connect(t, { getToken: () => jwt({ user_id: 1, role: "admin", exp: exp + n++ }), token: undefined, refreshMargin: 3500 });
  await waitFor(() => ws.frames("auth").length === 1, { timeout: 4000, what: "an auth frame" });
  ws.push({ type: "error", code: "rate_limited", message: "too many auth frames: retry in 1s; the current token stays in force" });
  await waitFor(() => ws.frames("auth").length === 2, { timeout: 4000, what: "the auth frame again" });
  assert.equal(ws.frames("auth")[1].token, ws.frames("auth")[0].token);
});

test("sync: an update without its TOASTed columns keeps their values", async (t) => {
  const { c, ws } = await connect(t);
  ws.push({ type: "state", table: G, rows: [{ key: "[1]", version: "11-0", data: { id: 1, name: "a", notes: "long" } }] });
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  ws.push({ ...change("12-0", "updated", 1, "a2"), unchanged: ["notes"] });
  assert.deepEqual(c.table(G).get("[1]"), { id: 1, name: "a2", notes: "long" });
  const V = "public.vote_count";
  ws.push({ id: "13-0", type: "voting_update", action: "created", table: V, key: "[1]", data: { vote_count: { id: 1, votes: 3, memo: "m" }, committee_id: 1 } });
  ws.push({ id: "14-0", type: "voting_update", action: "updated", table: V, key: "[1]", unchanged: ["memo"], data: { vote_count: { id: 1, votes: 4 }, committee_id: 1 } });
  assert.deepEqual(c.table(V).get("[1]"), { vote_count: { id: 1, votes: 4, memo: "m" }, committee_id: 1 });
  // An oversized row is marked, from a change or from the state.
  ws.push({ ...change("15-0", "updated", 1, "a3"), oversized: true });
  assert.equal(c.table(G).oversized("[1]"), true);
  ws.push(change("16-0", "updated", 1, "a4"));
  assert.equal(c.table(G).oversized("[1]"), false);
});

test("sync: an update of the primary key (old_key) moves the row", async (t) => {
  const { c, ws, events } = await connect(t);
  ws.push({ type: "state", table: G, rows: [{ key: "[1]", version: "11-0", data: { id: 1, name: "a", notes: "long" } }] });
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  ws.push({ ...change("12-0", "updated", 5, "a5"), old_key: "[1]", unchanged: ["notes"] });
  assert.deepEqual(names(c), { "[5]": "a5" });
  assert.equal(c.table(G).get("[5]").notes, "long", "TOASTed columns come from the row under its old key");
  assert.deepEqual(events, ["removed [1]", "added [5] a5"]);
});

test("sync: state_unavailable that says retry is retried; without it, the client waits for the next connection", async (t) => {
  const { c, ws } = await connect(t);
  ws.push({ type: "error", code: "state_unavailable", message: "the live state cannot be read now; retry" });
  await waitFor(() => ws.frames("sync").length === 2, { timeout: 4000, what: "the sync sent again" });
  ws.push({ type: "error", code: "state_unavailable", message: "this server keeps no live state" });
  await new Promise((r) => setTimeout(r, 1700));
  assert.equal(ws.frames("sync").length, 2);
  assert.equal(c.synced, false);
});

test("sync: a refreshed token with other committees syncs again", async (t) => {
  const exp = Math.floor(Date.now() / 1000) + 4;
  const tokens = [jwt({ user_id: 2, role: "supervisor", committees: [1], exp }), jwt({ user_id: 2, role: "supervisor", committees: [1, 2], exp: exp + 600 })];
  let n = 0;
  const { c, ws } = await connect(t, { token: undefined, getToken: () => tokens[Math.min(n++, 1)], refreshMargin: 3500 });
  ws.push({ type: "state_end", position: "10-0", tables: [G] });
  assert.equal(c.synced, true);
  await waitFor(() => ws.frames("auth").length === 1, { timeout: 5000, what: "the refresh" });
  ws.push({ type: "auth_ok" });
  assert.equal(ws.frames("sync").length, 2, "committees 1 and 2 now: a new sync");
  assert.equal(c.synced, false);
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  assert.equal(c.synced, true);
});

test("sync: a row that left the scope (deleted with left: true) leaves the collection", async (t) => {
  const { c, ws, events } = await connect(t);
  ws.push({ type: "state", table: G, rows: [row(1, "a", "11-0"), row(2, "b", "11-0")] });
  ws.push({ type: "state_end", position: "11-0", tables: [G] });
  ws.push({ ...change("12-0", "deleted", 1, "a"), left: true });
  assert.deepEqual(names(c), { "[2]": "b" });
  assert.deepEqual(events, ["removed [1]"]);
});

test("sync: a state older than the connection's position: the changes between reach the collection, their events are not repeated", async (t) => {
  const { c, ws, events } = await connect(t); // welcome at 10-0
  const delivered = [];
  c.on("*", (m) => delivered.push(m.id));
  // A shared read of the state at 8-0 (walcast reads once for syncs that start together).
  ws.push({ type: "state", table: G, rows: [row(1, "a", "7-0")] });
  ws.push({ type: "state_end", position: "8-0", tables: [G] });
  ws.push(change("9-0", "created", 2, "b"));
  assert.deepEqual(names(c), { "[1]": "a", "[2]": "b" });
  // Cut before 10-0 came: the resume asks from the last change the collection holds.
  ws.drop();
  const ws2 = await waitFor(() => ScriptedSocket.all.at(-1) !== ws && ScriptedSocket.all.at(-1), { what: "a reconnect" });
  assert.equal(ws2.url.searchParams.get("since"), "9-0");
  ws2.open();
  ws2.push(change("10-0", "updated", 1, "a2"), change("11-0", "created", 3, "c"));
  assert.deepEqual(names(c), { "[1]": "a2", "[2]": "b", "[3]": "c" });
  assert.deepEqual(delivered, ["11-0"], "events only after the position at connect");
  assert.deepEqual(events, ["added [2] b", "changed [1] a2", "added [3] c"]);
  assert.equal(c.stats.skipped, 2);
  ws2.drop();
  const ws3 = await waitFor(() => ScriptedSocket.all.at(-1) !== ws2 && ScriptedSocket.all.at(-1), { what: "a second reconnect" });
  assert.equal(ws3.url.searchParams.get("since"), "11-0");
});
