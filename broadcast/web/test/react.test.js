// Unit test of useWalcastRows and useRows (broadcast/web/react.js) with
// React (react-test-renderer) on a scripted socket (see scripted.js): the
// hook returns the synced rows and re-renders when they change. The hook
// against a real walcast: sync.test.js and test/package/installed.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createElement } from "react";
import TestRenderer, { act } from "react-test-renderer";

import { useRows, useWalcastRows } from "../react.js";
import { waitFor } from "./harness.js";
import { ScriptedSocket, jwt } from "./scripted.js";

globalThis.IS_REACT_ACT_ENVIRONMENT = false;

const G = "public.guarantee";

function Rows({ seen, ...options }) {
  const r = useWalcastRows(options);
  const strong = useRows(r.client, "guarantee", seen.strong);
  Object.assign(seen, { rows: r.rows, synced: r.synced, status: r.status, client: r.client, strongRows: strong, renders: seen.renders + 1 });
  return null;
}

test("useWalcastRows: the rows of a table, current after a sync and each change", async (t) => {
  const mine = (g) => g.committee_id === 1;
  const seen = { renders: 0, strong: (g) => g.status === "strong" };
  const before = ScriptedSocket.all.length;
  const props = { seen, url: "ws://walcast.test/ws", token: jwt({ user_id: 1, role: "admin" }), WebSocket: ScriptedSocket, table: "guarantee", filter: mine };
  const root = TestRenderer.create(createElement(Rows, props));
  t.after(() => act(() => root.unmount()));
  const ws = await waitFor(() => ScriptedSocket.all[before], { what: "a socket" });
  ws.open();
  await waitFor(() => seen.status === "open", { what: "open" });
  assert.deepEqual(ws.frames("sync"), [{ type: "sync" }]);
  assert.deepEqual(seen.rows, []);

  const g = (id, committee_id, status) => ({ id, committee_id, status });
  ws.push({ type: "state", table: G, message_type: "guarantee_update", rows: [
    { key: "[1]", version: "5-0", data: g(1, 1, "weak") }, { key: "[2]", version: "5-0", data: g(2, 2, "strong") },
  ] });
  ws.push({ type: "state_end", position: "5-0", tables: [G] });
  await waitFor(() => seen.synced && seen.rows.length === 1, { what: "the synced rows", detail: () => JSON.stringify(seen.rows) });
  assert.deepEqual(seen.rows, [g(1, 1, "weak")]);
  assert.deepEqual(seen.strongRows, [g(2, 2, "strong")]);

  const renders = seen.renders;
  ws.push({ id: "6-0", type: "guarantee_update", action: "updated", table: G, key: "[1]", data: g(1, 1, "strong") });
  ws.push({ id: "6-1", type: "guarantee_update", action: "created", table: G, key: "[3]", data: g(3, 1, "medium") });
  await waitFor(() => seen.rows.length === 2, { what: "the new row" });
  assert.deepEqual(seen.rows, [g(1, 1, "strong"), g(3, 1, "medium")]);
  assert.deepEqual(seen.strongRows, [g(2, 2, "strong"), g(1, 1, "strong")], "in version order: the row changed last comes last");
  assert.ok(seen.renders - renders <= 2, `two changes in one task re-render once (${seen.renders - renders} renders)`);

  ws.push({ id: "7-0", type: "guarantee_update", action: "truncated", table: G, data: {} });
  await waitFor(() => seen.rows.length === 0 && seen.strongRows.length === 0, { what: "the truncate" });
});
