// Unit tests of broadcast/web/client.js against a real walcast (with Redis,
// so resume survives walcast's restarts). See harness.js for how to run them.
import { test } from "node:test";
import assert from "node:assert/strict";

import { WalcastClient, compareIds, parseId, tokenExpiry } from "../client.js";
import { WS_URL, label, names, record, skip, sql, token, waitFor, walcast } from "./harness.js";

// newClient makes a client for this test and closes it when the test ends.
function newClient(t, options) {
  const c = new WalcastClient({ url: WS_URL, ...options });
  t.after(() => c.close());
  return c;
}

// mine keeps the guarantee changes whose elector_name starts with prefix.
const mine = (changes, prefix) => changes.filter((m) => String(m.data?.elector_name ?? "").startsWith(prefix));

function assertIncreasing(changes) {
  for (let i = 1; i < changes.length; i++) {
    assert.ok(compareIds(changes[i - 1].id, changes[i].id) < 0, `id ${changes[i].id} after ${changes[i - 1].id}`);
  }
}

const insert = (committee, name) =>
  `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (${committee}, 7, '${name}');`;

test("ids compare as numbers, not strings", () => {
  assert.deepEqual(parseId("18446744073709551615-3"), [18446744073709551615n, 3n]);
  assert.equal(parseId("12"), null);
  assert.ok(compareIds("9-0", "10-0") < 0);
  assert.ok(compareIds("10-2", "10-10") < 0);
  assert.equal(compareIds("10-2", "10-2"), 0);
  assert.throws(() => compareIds("x", "1-0"), TypeError);
  const payload = Buffer.from(JSON.stringify({ exp: 2000000000, name: "Zoë" })).toString("base64url");
  assert.equal(tokenExpiry(`e30.${payload}.sig`), 2000000000 * 1000);
  assert.equal(tokenExpiry("not a token"), null);
});

test("delivers every change once, in commit order", { skip }, async (t) => {
  const c = newClient(t, { getToken: () => token() });
  const r = record(c);
  await waitFor(() => c.status === "open", { what: "open" });
  const p = label("order");
  // One statement of 300 rows (one transaction), then ten small ones.
  await sql(`INSERT INTO guarantee (committee_id, user_id, elector_name)
    SELECT 1 + g % 3, g, '${p}-a' || lpad(g::text, 3, '0') FROM generate_series(1, 300) g`);
  for (let i = 0; i < 10; i++) await sql(insert(2, `${p}-b${i}`));
  await waitFor(() => mine(r.changes, p).length >= 310, { what: "310 changes" });
  const got = mine(r.changes, p);
  assert.equal(got.length, 310);
  assertIncreasing(got);
  const want = [
    ...Array.from({ length: 300 }, (_, i) => `${p}-a${String(i + 1).padStart(3, "0")}`),
    ...Array.from({ length: 10 }, (_, i) => `${p}-b${i}`),
  ];
  assert.deepEqual(names(got), want);
  // version is the commit LSN: the first half of the id, shared by a transaction.
  assert.equal(got[0].version, got[299].version);
  assert.equal(got[0].id.split("-")[0], got[0].version);
  assert.equal(c.lastId, got[309].id);
  assert.equal(c.stats.skipped, 0);
});

test("subscribe narrows delivery, in the option and later", { skip }, async (t) => {
  const c = newClient(t, { token: await token(), subscribe: { types: ["attendance_update"] } });
  const r = record(c);
  await waitFor(() => r.events.some((e) => e.type === "subscribed"), { what: "subscribed" });
  const p = label("sub");
  const elector = Math.floor(Math.random() * 1e9);
  await sql(insert(1, `${p}-guarantee`) + `INSERT INTO attendance (committee_id, elector_id, user_id) VALUES (1, ${elector}, 7);`);
  await waitFor(() => r.changes.length >= 1, { what: "the attendance change" });

  c.subscribe({ types: ["guarantee_update"], committees: [2] });
  await waitFor(() => r.events.filter((e) => e.type === "subscribed").length >= 2, { what: "second subscribed" });
  assert.deepEqual(r.events.filter((e) => e.type === "subscribed").at(-1), {
    type: "subscribed", types: ["guarantee_update"], committees: [2],
  });
  await sql(insert(1, `${p}-c1`) + insert(2, `${p}-c2`) + insert(3, `${p}-c3`) + insert(2, `${p}-end`));
  await waitFor(() => mine(r.changes, `${p}-end`).length === 1, { what: "the last row" });
  assert.deepEqual(r.changes.map((m) => m.type), ["attendance_update", "guarantee_update", "guarantee_update"]);
  assert.equal(r.changes[0].data.elector_id, elector);
  assert.deepEqual(names(r.changes.slice(1)), [`${p}-c2`, `${p}-end`]);
  assert.deepEqual(c.subscription, { types: ["guarantee_update"], committees: [2] });
});

test("walcast killed and restarted: the client resumes, nothing lost or twice, subscription kept", { skip }, async (t) => {
  const opts = { getToken: () => token(), initialDelay: 100, maxDelay: 1000 };
  const all = newClient(t, opts);
  const narrow = newClient(t, { ...opts, subscribe: { committees: [1] } });
  const ra = record(all), rn = record(narrow);
  await waitFor(() => all.status === "open" && narrow.status === "open", { what: "both open" });
  const p = label("restart");
  await sql(insert(1, `${p}-before`));
  await waitFor(() => mine(ra.changes, p).length === 1 && mine(rn.changes, p).length === 1, { what: "before" });

  await walcast.kill();
  await waitFor(() => all.status === "reconnecting" && narrow.status === "reconnecting", { what: "reconnecting" });
  await sql(insert(1, `${p}-down1`) + insert(2, `${p}-down2`));
  await sql(`UPDATE guarantee SET status = 'strong' WHERE elector_name = '${p}-down1'`);
  await sql(`DELETE FROM guarantee WHERE elector_name = '${p}-before'`);
  await walcast.start();
  await sql(insert(1, `${p}-after1`) + insert(2, `${p}-after2`));
  await waitFor(() => mine(ra.changes, `${p}-after2`).length && mine(rn.changes, `${p}-after1`).length, {
    what: "the changes after the restart",
    detail: () => JSON.stringify({ all: [all.status, ra.statuses, names(mine(ra.changes, p))], narrow: [narrow.status, rn.statuses, names(mine(rn.changes, p))] }),
  });
  // Give any duplicate a moment to show up.
  await new Promise((r) => setTimeout(r, 200));

  const seen = (rec) => mine(rec.changes, p).map((m) => `${m.action} ${m.data.elector_name.slice(p.length + 1)}`);
  assert.deepEqual(seen(ra), ["created before", "created down1", "created down2", "updated down1", "deleted before", "created after1", "created after2"]);
  assert.deepEqual(seen(rn), ["created before", "created down1", "updated down1", "deleted before", "created after1"]);
  assertIncreasing(ra.changes);
  assertIncreasing(rn.changes);
  assert.ok(ra.statuses.indexOf("reconnecting") > ra.statuses.indexOf("open"), ra.statuses.join(","));
  assert.equal(ra.statuses.at(-1), "open");
  // The subscription was sent again on the new connection, and walcast confirmed it.
  const subs = rn.events.filter((e) => e.type === "subscribed");
  assert.equal(subs.length, 2);
  assert.deepEqual(subs[1].committees, [1]);
});

// A proxy or a buggy server could hand the client a frame twice or an older
// one late: this WebSocket delivers every change twice, then the one before.
function echoingWebSocket() {
  return class EchoingWebSocket {
    #ws;
    constructor(url) {
      let prev = null;
      this.#ws = new WebSocket(url);
      this.#ws.onopen = (e) => this.onopen?.(e);
      this.#ws.onclose = (e) => this.onclose?.(e);
      this.#ws.onerror = (e) => this.onerror?.(e);
      this.#ws.onmessage = (e) => {
        this.onmessage?.(e);
        if (!JSON.parse(e.data).id) return;
        this.onmessage?.(e);
        if (prev) this.onmessage?.(prev);
        prev = e;
      };
    }
    get readyState() { return this.#ws.readyState; }
    send(data) { this.#ws.send(data); }
    close(code, reason) { this.#ws.close(code, reason); }
  };
}

test("duplicate and older ids are never delivered; since resumes after an id", { skip }, async (t) => {
  const c = newClient(t, { token: await token(), WebSocket: echoingWebSocket() });
  const r = record(c);
  await waitFor(() => c.status === "open", { what: "open" });
  const p = label("dup");
  for (let i = 0; i < 5; i++) await sql(insert(3, `${p}-${i}`));
  await waitFor(() => mine(r.changes, p).length >= 5, { what: "5 changes" });
  await new Promise((r) => setTimeout(r, 100));
  const got = mine(r.changes, p);
  assert.deepEqual(names(got), [0, 1, 2, 3, 4].map((i) => `${p}-${i}`));
  assert.ok(c.stats.skipped >= 9, `skipped ${c.stats.skipped}`);

  // A new client told to start after the second change gets the last three.
  const later = newClient(t, { token: await token(), since: got[1].id });
  const rl = record(later);
  await waitFor(() => mine(rl.changes, p).length >= 3, { what: "3 replayed changes" });
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(names(mine(rl.changes, p)), [2, 3, 4].map((i) => `${p}-${i}`));
});

test("a position walcast does not have gives resync_required", { skip }, async (t) => {
  const c = newClient(t, { token: await token(), since: "99999999999999-0" });
  const r = record(c);
  await waitFor(() => r.events.some((e) => e.type === "resync_required"), { what: "resync_required" });
  assert.match(r.events.find((e) => e.type === "resync_required").reason, /position/);
});

// The token tests wait for expiries, so they run side by side.
test("tokens", { skip, concurrency: true }, async (t) => {
  const sub = [];
  sub.push(t.test("refreshed with auth before they expire, on the same connection", async (t) => {
    let calls = 0;
    const c = newClient(t, { getToken: () => (calls++, token({ ttl: "3s" })) });
    const r = record(c);
    await waitFor(() => r.events.filter((e) => e.type === "auth_ok").length >= 2, { timeout: 8000, what: "two auth_ok" });
    const p = label("refresh");
    await sql(insert(1, p));
    await waitFor(() => mine(r.changes, p).length === 1, { what: "a change after the first token expired" });
    assert.deepEqual(r.statuses, ["connecting", "open"]);
    assert.ok(calls >= 3, `getToken called ${calls} times`);
  }));

  sub.push(t.test("4001 (expired without auth): a fresh token, reconnect and resume", async (t) => {
    let calls = 0;
    const c = newClient(t, { getToken: () => (calls++, token({ ttl: "2s" })), authRefresh: false, initialDelay: 100 });
    const r = record(c);
    const infos = [];
    c.on("status", (s, info) => infos.push(info));
    await waitFor(() => c.status === "open", { what: "open" });
    const p = label("expired");
    await sql(insert(2, `${p}-1`));
    await waitFor(() => r.statuses.filter((s) => s === "open").length >= 2, { timeout: 6000, what: "a second open" });
    await sql(insert(2, `${p}-2`));
    await waitFor(() => mine(r.changes, p).length >= 2, { what: "two changes" });
    assert.deepEqual(names(mine(r.changes, p)), [`${p}-1`, `${p}-2`]);
    assert.ok(infos.some((i) => i.code === 4001), JSON.stringify(infos));
    assert.equal(calls, 2);
  }));

  sub.push(t.test("a plain token that expired closes the client", async (t) => {
    const c = newClient(t, { token: await token({ ttl: "2s" }) });
    const r = record(c);
    const infos = [];
    c.on("status", (s, info) => infos.push(info));
    await waitFor(() => c.status === "closed", { timeout: 6000, what: "closed" });
    assert.deepEqual(r.statuses, ["connecting", "open", "closed"]);
    assert.equal(infos.at(-1).code, 4001);
  }));
  await Promise.all(sub);
});

test("keepalive: a frozen walcast is detected and the client reconnects when it thaws", { skip }, async (t) => {
  const c = newClient(t, {
    token: await token(), pingInterval: 200, pongTimeout: 500, connectTimeout: 700, initialDelay: 100, maxDelay: 400,
  });
  const r = record(c);
  await waitFor(() => c.status === "open", { what: "open" });
  await waitFor(() => r.events.some((e) => e.type === "pong"), { what: "a pong" });
  const p = label("frozen");
  await sql(insert(1, `${p}-1`));
  await waitFor(() => mine(r.changes, p).length === 1, { what: "first change" });
  await walcast.stop();
  try {
    await waitFor(() => c.status === "reconnecting", { timeout: 3000, what: "reconnecting while frozen" });
    await sql(insert(1, `${p}-2`));
    await new Promise((r) => setTimeout(r, 1000)); // connect attempts time out meanwhile
  } finally {
    await walcast.cont();
  }
  await waitFor(() => mine(r.changes, p).length >= 2, { what: "the change made while frozen" });
  assert.deepEqual(names(mine(r.changes, p)), [`${p}-1`, `${p}-2`]);
  assert.equal(c.status, "open");
});

test("close() ends the client for good", { skip }, async (t) => {
  const c = newClient(t, { token: await token() });
  const r = record(c);
  await waitFor(() => c.status === "open", { what: "open" });
  c.close();
  assert.equal(c.status, "closed");
  await sql(insert(1, label("closed")));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(r.changes, []);
  assert.deepEqual(r.statuses, ["connecting", "open", "closed"]);
});
