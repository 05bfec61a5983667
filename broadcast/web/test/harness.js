// Helpers shared by the Node tests. They talk to a real walcast started by
// the Go test TestWebClientAndDashboard (cmd/walcast/browser_test.go),
// which passes its addresses in the environment:
//
//   WALCAST_URL      http://127.0.0.1:PORT of walcast (page at /, /ws, /client.js)
//   WALCAST_CONTROL  the Go test's control server: SQL, kill/start walcast, tokens
//   CHROMIUM         the browser for playwright-core (default /usr/bin/chromium)
//   WALCAST_SCREENSHOT  where the dashboard test saves its screenshot
//
// Run them with `go test ./cmd/walcast -run WebClient -v`.

export const WALCAST_URL = process.env.WALCAST_URL;
const CONTROL = process.env.WALCAST_CONTROL;

/** skip is the node:test option that skips a test outside the Go harness. */
export const skip = WALCAST_URL && CONTROL ? false : "needs WALCAST_URL and WALCAST_CONTROL: run `go test ./cmd/walcast -run WebClient`";

export const WS_URL = WALCAST_URL ? WALCAST_URL.replace(/^http/, "ws") + "/ws" : "";

async function control(method, path, body) {
  const res = await fetch(CONTROL + path, { method, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status}: ${text}`);
  return text;
}

/** sql runs statements on the election database (committees 1-3, candidates 1-2). */
export const sql = (q) => control("POST", "/sql", q);

/** query runs one SELECT on the election database and returns its rows. */
export const query = async (q) => JSON.parse(await control("POST", "/query", q));

/** walcast controls the walcast process: kill (SIGKILL), start, stop (SIGSTOP), cont. */
export const walcast = {
  kill: () => control("POST", "/walcast/kill"),
  start: () => control("POST", "/walcast/start"),
  stop: () => control("POST", "/walcast/stop"),
  cont: () => control("POST", "/walcast/cont"),
};

/** token mints an access token signed with the test secret. */
export function token({ user = 1, role = "admin", committees = [], ttl = "1h" } = {}) {
  const q = new URLSearchParams({ user: String(user), role, committees: committees.join(","), ttl });
  return control("GET", "/token?" + q);
}

/** waitFor polls fn until it returns a truthy value and returns it. */
// detail, if given, describes the state in the error.
export async function waitFor(fn, { timeout = 10000, interval = 20, what = "condition", detail } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail ? ": " + detail() : ""}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** record collects what a client delivers: changes, statuses and control events. */
export function record(client) {
  const r = { changes: [], statuses: [], events: [] };
  client.on("*", (m) => r.changes.push(m));
  // statuses lists each change of status; retries while reconnecting repeat
  // "reconnecting" with a new delay and are not listed again.
  client.on("status", (s) => r.statuses.at(-1) !== s && r.statuses.push(s));
  for (const type of ["welcome", "subscribed", "resync_required", "auth_ok", "pong", "error"]) {
    client.on(type, (m) => r.events.push({ type, ...m }));
  }
  return r;
}

/** names returns each change's elector_name (guarantee rows) in order. */
export const names = (changes) => changes.map((m) => m.data.elector_name);

let uniq = 0;
/** label returns a string unique to this test process, for row names. */
export const label = (prefix) => `${prefix}-${process.pid}-${++uniq}`;
