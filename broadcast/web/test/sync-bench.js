// sync-bench.js measures what a sync of 100,000 rows costs client.js
// itself (no network, no server): parsing the state frames, staging and
// committing the collection (rows in hash order, as Redis sends them),
// then applying 10,000 changes. Run:
//
//   node broadcast/web/test/sync-bench.js
//
// The server's side (sync time to 1 and 1,000 clients) is BenchmarkStateSync.
import { WalcastClient } from "../client.js";
import { ScriptedSocket, jwt } from "./scripted.js";
const c = new WalcastClient({ url: "ws://x/ws", token: jwt({ user_id: 1, role: "admin" }), sync: true, WebSocket: ScriptedSocket });
await new Promise((r) => setTimeout(r, 10));
const ws = ScriptedSocket.all[0]; ws.open();
const N = 100000, frames = [];
for (let i = 0; i < N; i += 500) {
  const rows = [];
  for (let j = i; j < i + 500; j++) rows.push({ key: `[${j}]`, version: `${22000000 + ((j * 7919) % N)}-0`, data: { id: j, committee_id: j % 7, user_id: j % 50, elector_id: j, elector_name: `Elector ${j}`, status: "medium", notes: "", created_at: "2026-12-02T06:00:00.123456Z", updated_at: "2026-12-02T06:00:00.123456Z" } });
  frames.push(JSON.stringify({ type: "state", table: "public.guarantee", message_type: "guarantee_update", rows }));
}
const bytes = frames.reduce((a, f) => a + f.length, 0);
const t0 = performance.now();
for (const f of frames) ws.onmessage({ data: f });
ws.onmessage({ data: JSON.stringify({ type: "state_end", position: "22000000-0", tables: ["public.guarantee"], unavailable: [] }) });
const t1 = performance.now();
for (let k = 0; k < 10000; k++) ws.onmessage({ data: JSON.stringify({ id: `${23000000 + k}-0`, type: "guarantee_update", action: "updated", table: "public.guarantee", key: `[${k * 7 % N}]`, data: { id: k, status: "strong" } }) });
const t2 = performance.now();
console.log(`state: ${N} rows (${(bytes / 1e6).toFixed(1)} MB of frames) parsed and committed in ${(t1 - t0).toFixed(0)} ms; 10,000 changes applied in ${(t2 - t1).toFixed(0)} ms; size ${c.table("guarantee").size}; heap ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB`);
c.close();
