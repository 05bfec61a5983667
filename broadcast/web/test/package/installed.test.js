// Tests of the packed @walcast/client as an application gets it: the Go
// test TestClientPackage (cmd/walcast/clientpkg_test.go) runs `npm pack`,
// installs the tarball into a scratch project, copies this folder and
// ../harness.js there, and runs them against a real walcast. So every import
// below goes through the installed package's "exports", not a path into
// the repository.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { createElement } from "react";
import TestRenderer from "react-test-renderer";

import WalcastClientDefault, { SyncedTable, WalcastClient, compareIds } from "@walcast/client";
import { useRows, useWalcast, useWalcastRows } from "@walcast/client/react";
import { WS_URL, label, skip, sql, token, waitFor } from "./harness.js";

const require = createRequire(import.meta.url);

test("the installed package: ESM entry points, types, no runtime dependencies", () => {
  assert.equal(WalcastClientDefault, WalcastClient);
  assert.equal(typeof useWalcast, "function");
  assert.equal(typeof useWalcastRows, "function");
  assert.equal(typeof useRows, "function");
  assert.equal(typeof SyncedTable, "function");
  const pkg = require("@walcast/client/package.json");
  assert.equal(pkg.name, "@walcast/client");
  assert.equal(pkg.version, process.env.WALCAST_PACKAGE_VERSION);
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.dependencies ?? {}, {});
  assert.equal(pkg.peerDependenciesMeta?.react?.optional, true);
  assert.equal(pkg.exports["."].types, "./client.d.ts");
  assert.equal(pkg.exports["./react"].types, "./react.d.ts");
});

const insert = (committee, name) =>
  `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (${committee}, 7, '${name}');`;
const mine = (changes, prefix) => changes.filter((m) => String(m.data?.elector_name ?? "").startsWith(prefix));

test("WalcastClient from the package connects and receives a change", { skip }, async (t) => {
  const c = new WalcastClient({ url: WS_URL, getToken: () => token() });
  t.after(() => c.close());
  const got = [];
  c.on("guarantee_update", (m) => got.push(m));
  await waitFor(() => c.status === "open", { what: "open" });
  const p = label("pkg");
  await sql(insert(1, `${p}-a`) + insert(2, `${p}-b`));
  await waitFor(() => mine(got, p).length >= 2, { what: "2 changes" });
  const m = mine(got, p);
  assert.deepEqual(m.map((x) => x.data.elector_name), [`${p}-a`, `${p}-b`]);
  assert.equal(m[0].action, "created");
  assert.ok(compareIds(m[0].id, m[1].id) < 0);
});

// Hook renders a component calling useWalcast with props and records what
// it sees. react-test-renderer's legacy root renders synchronously and runs
// effects soon after; the test waits for their outcome, not for a time.
function Hook({ seen, ...options }) {
  const r = useWalcast(options);
  seen.status = r.status;
  seen.client = r.client;
  seen.renders++;
  return null;
}

test("useWalcast: connects, delivers, resubscribes and swaps callbacks without reconnecting, closes when disabled", { skip }, async (t) => {
  const seen = { renders: 0, status: null, client: null };
  const first = [], second = [], statuses = [];
  let tokens = 0;
  const props = (over) => ({
    seen,
    url: WS_URL,
    getToken: () => (tokens++, token()),
    subscribe: { committees: [1] },
    onMessage: (m) => first.push(m),
    onStatus: (s) => statuses.push(s),
    ...over,
  });
  const root = TestRenderer.create(createElement(Hook, props()));
  t.after(() => root.unmount());

  await waitFor(() => seen.status === "open", { what: "status open", detail: () => JSON.stringify(statuses) });
  const client = seen.client;
  assert.ok(client instanceof WalcastClient);
  assert.deepEqual(client.subscription, { types: null, committees: [1] });
  await waitFor(() => client.stats.connects === 1, { what: "one connect" });

  // The subscription filters: committee 2 is not delivered.
  const p = label("hook");
  await sql(insert(2, `${p}-skipped`) + insert(1, `${p}-one`));
  await waitFor(() => mine(first, p).length >= 1, { what: "committee 1 change" });
  assert.deepEqual(mine(first, p).map((m) => m.data.elector_name), [`${p}-one`]);

  // A new subscription (a new object, another value) and a new callback:
  // the same client and connection, the new subscription, the new callback.
  root.update(createElement(Hook, props({ subscribe: { committees: [2] }, onMessage: (m) => second.push(m) })));
  await waitFor(() => client.subscription?.committees?.[0] === 2, { what: "subscription sent" });
  // Confirmed by walcast before the next insert, so nothing is filtered
  // locally in between; the marker row on committee 2 proves it arrives.
  await sql(insert(1, `${p}-c1`) + insert(2, `${p}-two`));
  await waitFor(() => mine(second, p).some((m) => m.data.elector_name === `${p}-two`), { what: "committee 2 change" });
  assert.deepEqual(mine(second, p).map((m) => m.data.elector_name), [`${p}-two`]);
  assert.equal(mine(first, p).length, 1, "the old callback got nothing more");
  assert.equal(seen.client, client);
  assert.equal(client.stats.connects, 1, "no reconnect");
  // The same subscription value in a new object sends nothing.
  root.update(createElement(Hook, props({ subscribe: { committees: [2] }, onMessage: (m) => second.push(m) })));
  assert.equal(seen.client, client);

  // enabled: false closes the client; true again opens a new one.
  root.update(createElement(Hook, props({ enabled: false })));
  await waitFor(() => client.status === "closed" && seen.status === "idle" && seen.client === null, { what: "closed and idle" });
  root.update(createElement(Hook, props({ enabled: true })));
  await waitFor(() => seen.status === "open" && seen.client && seen.client !== client, { what: "a new client open" });
  const again = seen.client;
  assert.ok(tokens >= 2, "getToken was called for each connection");

  // Unmounting closes it.
  root.unmount();
  await waitFor(() => again.status === "closed", { what: "closed on unmount" });
});

test("useWalcast with a plain token: a new token makes a new connection", { skip }, async (t) => {
  const seen = { renders: 0, status: null, client: null };
  const [a, b] = [await token({ user: 1 }), await token({ user: 2, role: "admin" })];
  const root = TestRenderer.create(createElement(Hook, { seen, url: WS_URL, token: a }));
  t.after(() => root.unmount());
  await waitFor(() => seen.status === "open", { what: "open with token a" });
  const first = seen.client;
  root.update(createElement(Hook, { seen, url: WS_URL, token: a, onMessage: () => {} }));
  assert.equal(seen.client, first, "same token, new callback: same client");
  root.update(createElement(Hook, { seen, url: WS_URL, token: b }));
  await waitFor(() => seen.client && seen.client !== first && seen.status === "open", { what: "a new client with token b" });
  assert.equal(first.status, "closed");
});

// ownRows keeps the guarantee rows whose elector_name starts with prefix.
const ownRows = (rows, prefix) => rows.filter((g) => String(g.elector_name).startsWith(prefix));

test("useWalcastRows from the package: a table's rows in scope, current after changes", { skip }, async (t) => {
  const seen = { rows: [], synced: false };
  function Rows(props) {
    const r = useWalcastRows(props);
    seen.rows = r.rows;
    seen.synced = r.synced;
    return null;
  }
  const p = label("rows");
  await sql(insert(3, `${p}-before`));
  const root = TestRenderer.create(createElement(Rows, {
    url: WS_URL, getToken: () => token(), table: "guarantee", subscribe: { types: ["guarantee_update"], committees: [3] },
  }));
  t.after(() => root.unmount());
  await waitFor(() => seen.synced && ownRows(seen.rows, p).length === 1, { what: "the synced rows", timeout: 20000 });
  await sql(insert(3, `${p}-after`) + insert(1, `${p}-other`) + `UPDATE guarantee SET status = 'strong' WHERE elector_name = '${p}-before';`);
  await waitFor(() => ownRows(seen.rows, p).length === 2 && ownRows(seen.rows, `${p}-before`)[0].status === "strong", { what: "the changes" });
  assert.ok(seen.rows.every((g) => g.committee_id === 3), "only committee 3");
});

