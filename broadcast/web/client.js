// walcast browser client: one WebSocket connection to walcast's /ws that
// reconnects, resumes from the last message id and never delivers an id
// twice or out of order. No dependencies; works in browsers and in Node 20+
// (pass a WebSocket constructor there). Documentation: docs/client.md;
// the frames themselves: docs/protocol.md.
//
//   import { WalcastClient } from "https://walcast.example.com/client.js";
//   const c = new WalcastClient({ url: "wss://walcast.example.com/ws", getToken });
//   c.on("guarantee_update", (m) => store.dispatch(guaranteeChanged(m)));
//   c.on("resync_required", () => refetchEverything());

/** Message types walcast sends for row changes. */
export const CHANGE_TYPES = Object.freeze(["guarantee_update", "attendance_update", "voting_update", "dashboard_update"]);

const STABLE = 5000; // a connection open this long resets the backoff

const DEFAULTS = {
  initialDelay: 500, // first reconnect waits up to this (full jitter)
  maxDelay: 30000, // cap of the exponential backoff
  connectTimeout: 10000, // an opening handshake that takes longer is abandoned
  pingInterval: 20000, // {"type":"ping"} this often while open
  pongTimeout: 10000, // no frame this long after a ping: the connection is dead
  refreshMargin: 60000, // ask getToken this long before the token's exp
};

/**
 * parseId splits a message id "LSN-ordinal" into two BigInts, or returns
 * null when id is not a message id. LSNs use all 64 bits: never compare ids
 * as strings or as Numbers.
 */
export function parseId(id) {
  const m = typeof id === "string" ? /^(\d{1,20})-(\d{1,20})$/.exec(id) : null;
  return m ? [BigInt(m[1]), BigInt(m[2])] : null;
}

function cmpKey(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  if (a[1] !== b[1]) return a[1] < b[1] ? -1 : 1;
  return 0;
}

/** compareIds orders two message ids: negative, 0 or positive. */
export function compareIds(a, b) {
  const x = parseId(a), y = parseId(b);
  if (!x || !y) throw new TypeError(`not a walcast message id: ${x ? b : a}`);
  return cmpKey(x, y);
}

/**
 * compareVersions orders two `version` values (commit LSNs as decimal
 * strings). A row whose message has a greater version was changed by a
 * later transaction: use it to tell that a form is stale.
 */
export function compareVersions(a, b) {
  const x = BigInt(a), y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * decodeToken returns a JWT's claims (user_id, role, committees, exp, …) or
 * null when token is not a JWT. It verifies nothing: walcast does that.
 */
export function decodeToken(token) {
  try {
    const part = String(token).split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims !== null && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * tokenExpiry returns a JWT's exp claim in milliseconds since the epoch, or
 * null when the token has none or is not a JWT.
 */
export function tokenExpiry(token) {
  const exp = decodeToken(token)?.exp;
  return typeof exp === "number" ? exp * 1000 : null;
}

// ---- synced collections -------------------------------------------------

// decCmp orders two unsigned decimal strings without leading zeros: the
// longer is greater, and equal lengths compare as text.
function decCmp(a, b) {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

const noZeros = (s) => (s.length > 1 && s[0] === "0" ? s.replace(/^0+(?=\d)/, "") : s);

// idOrder orders two ids that parseId accepts, as (LSN, seq) pairs of
// unsigned 64-bit integers, without allocating BigInts: collections compare
// a version for every row of every change and every state row.
function idOrder(a, b) {
  const i = a.indexOf("-"), j = b.indexOf("-");
  return decCmp(noZeros(a.slice(0, i)), noZeros(b.slice(0, j))) || decCmp(noZeros(a.slice(i + 1)), noZeros(b.slice(j + 1)));
}

const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// withUnchanged gives an update whose TOASTed columns were not sent
// (`unchanged`) the previous row's values of those columns, at the top level
// or inside a wrapped row (voting_update's {vote_count: row, …}), so that a
// collection never loses a column's value.
function withUnchanged(data, unchanged, prev) {
  if (!Array.isArray(unchanged) || unchanged.length === 0 || !isPlain(prev) || !isPlain(data)) return data;
  const out = { ...data };
  for (const col of unchanged) {
    if (!(col in out) && col in prev) out[col] = prev[col];
    for (const k of Object.keys(out)) {
      if (isPlain(out[k]) && isPlain(prev[k]) && !(col in out[k]) && col in prev[k]) out[k] = { ...out[k], [col]: prev[k][col] };
    }
  }
  return out;
}

// Methods of SyncedTable that only the client calls.
const REPLACE = Symbol("replace"), UPSERT = Symbol("upsert"), DELETE = Symbol("delete"), CLEAR = Symbol("clear");

/**
 * SyncedTable is the client's copy of one table's rows in its scope, by
 * primary key ("[7]": the key's values as a JSON array), iterated in
 * version order (the row changed last comes last). The client fills it
 * from walcast's state and keeps it current from changes, applying a change
 * only when its id is newer than the row's version, so a row never goes
 * back to an older version. Read it; the client alone writes it.
 */
export class SyncedTable {
  #rows = new Map(); // key -> {data, version}
  #list = null; // rows() until the next change
  #revision = 0;
  #name;
  #type;

  constructor(name, type) {
    this.#name = name;
    this.#type = type ?? null;
  }

  /** The table, as in change frames: "public.guarantee". */
  get name() { return this.#name; }
  /** Its message type ("guarantee_update"), or null until walcast has sent one of its rows. */
  get type() { return this.#type; }
  /** The number of rows. */
  get size() { return this.#rows.size; }
  /** Grows by one with every change to the rows: a cheap "did it change" test. */
  get revision() { return this.#revision; }

  /** has tells whether the row with this key is present. */
  has(key) { return this.#rows.has(key); }
  /** get returns the row's data (as in a change's `data`), or undefined. */
  get(key) { return this.#rows.get(key)?.data; }
  /** version returns the id of the change that last wrote the row, or undefined. */
  version(key) { return this.#rows.get(key)?.version; }
  /** oversized tells whether the row was over walcast's size limit: its data holds only its key and scope columns; refetch it. */
  oversized(key) { return this.#rows.get(key)?.oversized === true; }
  /** keys iterates over the primary keys. */
  keys() { return this.#rows.keys(); }
  /** values iterates over the rows' data. */
  *values() { for (const r of this.#rows.values()) yield r.data; }
  /** entries iterates over [key, data] pairs. */
  *entries() { for (const [k, r] of this.#rows) yield [k, r.data]; }
  [Symbol.iterator]() { return this.entries(); }

  /**
   * rows returns the rows' data as an array, the same array until the next
   * change (so it can be a React dependency), or only those that filter keeps.
   */
  rows(filter) {
    if (!this.#list) this.#list = Object.freeze([...this.values()]);
    return typeof filter === "function" ? this.#list.filter(filter) : this.#list;
  }

  #touch() {
    this.#list = null;
    this.#revision++;
  }

  // REPLACE puts a sync's rows in, in version order.
  [REPLACE](rows, type) {
    const sortKey = (v) => v.split("-").map((n) => noZeros(n).padStart(20, "0")).join("-");
    const list = [...rows].map((e) => [sortKey(e[1].version), e]);
    list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    this.#rows = new Map(list.map((x) => x[1]));
    if (type) this.#type = type;
    this.#touch();
  }

  // UPSERT applies a created or updated row; it returns the previous row
  // ({data} or null) or undefined when the change is not newer than the row.
  // base is the row's data under its old key, for an update that changed
  // the primary key.
  [UPSERT](key, data, version, type, unchanged, base, oversized) {
    if (type && !this.#type) this.#type = type;
    const prev = this.#rows.get(key);
    if (prev && idOrder(version, prev.version) <= 0) return undefined;
    // Changes come in id order: the row written last goes last.
    this.#rows.delete(key);
    this.#rows.set(key, { data: withUnchanged(data, unchanged, prev?.data ?? base), version, oversized: oversized === true });
    this.#touch();
    return prev ?? null;
  }

  // DELETE removes the row if the change is newer; it returns the removed row.
  [DELETE](key, version) {
    const prev = this.#rows.get(key);
    if (!prev || idOrder(version, prev.version) <= 0) return undefined;
    this.#rows.delete(key);
    this.#touch();
    return prev;
  }

  // CLEAR (TRUNCATE) removes the rows older than version; it returns them.
  [CLEAR](version) {
    const gone = [];
    for (const [key, r] of this.#rows) if (idOrder(r.version, version) < 0) gone.push([key, r]);
    for (const [key] of gone) this.#rows.delete(key);
    if (gone.length) this.#touch();
    return gone;
  }
}

// scopeOf is what of a token decides the rows it may see: a new token with
// another role or other committees needs a new sync.
function scopeOf(token) {
  const c = decodeToken(token);
  return c ? JSON.stringify([c.user_id ?? c.sub ?? null, c.role ?? null, c.committees ?? null]) : null;
}

// retryAfterMs reads how long to wait from a rate_limited error's message:
// "retry in 2s" or "at most one every 5 seconds".
function retryAfterMs(message) {
  const text = String(message ?? "");
  const m = /retry in (\d+(?:\.\d+)?)\s*(ms|s)\b/.exec(text) ?? /one every (\d+(?:\.\d+)?) (s)econds?\b/.exec(text);
  return m ? Number(m[1]) * (m[2] === "s" ? 1000 : 1) : null;
}

function normalizeSubscription(sub) {
  if (sub == null) return { types: null, committees: null };
  if (typeof sub !== "object") throw new TypeError("subscribe: expected {types, committees}");
  const out = { types: null, committees: null };
  if (sub.types != null) {
    if (!Array.isArray(sub.types) || sub.types.some((t) => typeof t !== "string")) {
      throw new TypeError("subscribe: types must be an array of message type names");
    }
    out.types = [...sub.types];
  }
  if (sub.committees != null) {
    if (!Array.isArray(sub.committees) || sub.committees.some((c) => !Number.isSafeInteger(c))) {
      throw new TypeError("subscribe: committees must be an array of integer committee ids");
    }
    out.committees = [...sub.committees];
  }
  return out;
}

// wsURL turns the url option into the /ws address: ws(s) URLs are used as
// they are, http(s) ones get the matching scheme, a bare origin gets /ws.
function wsURL(url) {
  const base = globalThis.location?.href;
  const u = new URL(url ?? "/ws", base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`url: ${url} is not a ws, wss, http or https URL`);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  u.hash = "";
  return u;
}

const report = (err) =>
  typeof globalThis.reportError === "function" ? globalThis.reportError(err) : setTimeout(() => { throw err; });

/**
 * WalcastClient keeps one connection to walcast open and delivers each
 * change message once, in commit order. See client.d.ts for the options and
 * docs/client.md for a guide.
 */
export class WalcastClient {
  #opts;
  #WebSocket;
  #getToken;
  #token = null; // the token in use
  #needFreshToken = false; // ask getToken before the next connect
  #handlers = new Map();
  #subscription = null; // null: never subscribed, so nothing to send
  #status = "idle";
  #closed = false;
  #everOpened = false;
  #attempt = 0; // reconnects since the last connection that lasted
  #openedAt = 0;
  #failures = 0; // consecutive attempts that never opened
  #seq = 0; // invalidates async work of older attempts
  #ws = null;
  #last = null; // [lsn, ordinal] of lastId
  #lastId = null;
  #timers = { retry: 0, connect: 0, ping: 0, dead: 0, refresh: 0, sync: 0 };
  #stats = { received: 0, delivered: 0, skipped: 0, filtered: 0, connects: 0, syncs: 0, stateRows: 0 };
  #pendingAuth = null; // a token sent in an auth frame, until auth_ok or an error
  // Synced collections (options.sync): see #requestSync and #onStateEnd.
  #sync = false;
  #tables = new Map(); // table name -> SyncedTable, the tables the last state_end listed
  #unavailable = new Map(); // table name -> why walcast has no state for it
  #staged = new Map(); // table name -> {type, rows}: state frames since the last state_end
  #needSync = false; // the collections must be filled again: sync on the next open
  #inFlight = false; // a sync frame was sent and its state_end has not come
  #syncAgain = false; // another sync was asked for while one was in flight
  #everSynced = false;
  #syncAttempt = 0; // rate-limited sync frames in a row, for the backoff
  #scope = null; // scopeOf the token the collections were synced with
  #applied = null; // [lsn, seq] of the last change applied to the collections
  #appliedId = null;
  // wake runs when the network comes back or the page is shown again (a
  // laptop waking up): check an open connection now instead of at the next
  // ping, and end a reconnect's wait.
  #wake = () => {
    if (this.#closed || (globalThis.document && globalThis.document.visibilityState === "hidden")) return;
    if (this.#ws && this.#status === "open") this.#ping(this.#ws);
    else if (!this.#ws && this.#status === "reconnecting") this.#connectNow();
  };

  constructor(options = {}) {
    this.#opts = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket: pass options.WebSocket (in Node 20, run with --experimental-websocket, or pass the ws package's WebSocket)");
    }
    // token is used first when both are given; getToken for every later one.
    if (typeof options.getToken === "function") this.#getToken = options.getToken;
    if (typeof options.token === "string" && options.token) this.#token = options.token;
    if (!this.#getToken && !this.#token) throw new TypeError("pass token (a string) or getToken (a function returning one)");
    wsURL(options.url); // fail now on a bad url, not at the first connect
    if (options.subscribe !== undefined) this.#subscription = normalizeSubscription(options.subscribe);
    if (options.sync !== undefined && typeof options.sync !== "boolean") throw new TypeError("sync: expected true or false");
    this.#sync = options.sync === true;
    this.#needSync = this.#sync;
    if (options.since != null) {
      const key = parseId(options.since);
      if (!key) throw new TypeError(`since: not a walcast message id: ${options.since}`);
      this.#last = key;
      this.#lastId = options.since;
    }
    globalThis.addEventListener?.("online", this.#wake);
    globalThis.document?.addEventListener?.("visibilitychange", this.#wake);
    // Connect after the caller has had a chance to add handlers.
    queueMicrotask(() => this.#connectNow());
  }

  /** The connection's state: idle (not started yet), connecting, open, reconnecting or closed. */
  get status() { return this.#status; }

  /**
   * The resume position: the id of the last change delivered, or, before the
   * first one, the position walcast reported at connect (or options.since).
   */
  get lastId() { return this.#lastId; }

  /** The subscription re-sent after every reconnect, or null for everything. */
  get subscription() {
    const s = this.#subscription;
    return s && { types: s.types && [...s.types], committees: s.committees && [...s.committees] };
  }

  /** Counters: frames received, changes delivered, skipped (duplicates or older ids), filtered, connects, syncs, stateRows. */
  get stats() { return { ...this.#stats }; }

  /**
   * With options.sync: true when the collections hold every row of the
   * subscription's tables as of a state_end and are kept current; false
   * before the first sync and while a new one is under way.
   */
  get synced() { return this.#sync && !this.#needSync && this.#everSynced; }

  /** With options.sync: the synced collections, by table name. */
  get tables() { return new Map(this.#tables); }

  /** With options.sync: the tables of the subscription walcast keeps no state for, and why. */
  get unavailable() { return [...this.#unavailable].map(([table, reason]) => ({ table, reason })); }

  /**
   * table returns the synced collection of a table ("public.guarantee", or
   * "guarantee" when only one schema has that table), or undefined.
   */
  table(name) {
    const t = this.#tables.get(name);
    if (t || typeof name !== "string" || name.includes(".")) return t;
    const found = [...this.#tables.values()].filter((x) => x.name.endsWith("." + name));
    return found.length === 1 ? found[0] : undefined;
  }

  /** rows returns the rows of a table (see table), those filter keeps if given; [] for an unknown table. */
  rows(name, filter) {
    return this.table(name)?.rows(filter) ?? [];
  }

  /** resync fills the collections again from walcast's state (options.sync). */
  resync() {
    if (!this.#sync) throw new TypeError("resync: the client was made without sync: true");
    this.#requestSync();
  }

  /**
   * on adds a handler: for a change type ("guarantee_update", …), "*" for
   * every change, "status", "resync_required", "welcome", "subscribed",
   * "auth_ok", "pong" or "error". It returns a function that removes it.
   */
  on(type, handler) {
    if (typeof handler !== "function") throw new TypeError("on: handler must be a function");
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  /** off removes a handler added with on. */
  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  /**
   * subscribe narrows what this client receives ({types, committees}; null
   * or omitted means all). It is sent now if connected and again after
   * every reconnect; until walcast confirms it, the client filters locally.
   */
  subscribe(sub = {}) {
    this.#subscription = normalizeSubscription(sub);
    // A sync frame replaces the subscription as subscribe does, and fills
    // the collections for the new scope.
    if (this.#sync) this.#requestSync();
    else this.#sendSubscription();
  }

  /** close ends the connection for good; no handler is called after it but status "closed". */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#seq++;
    this.#unlisten();
    const ws = this.#ws;
    this.#detach();
    if (ws) {
      try { ws.close(1000, "client closed"); } catch { /* already closing */ }
    }
    this.#setStatus("closed", { reason: "closed by the client" });
    this.#handlers.clear();
  }

  // ---- connection ------------------------------------------------------

  #connectNow() {
    clearTimeout(this.#timers.retry);
    this.#connect().catch((err) => this.#emitError("internal", String(err?.message ?? err), err));
  }

  async #connect() {
    if (this.#closed || this.#ws) return;
    const seq = ++this.#seq;
    this.#setStatus(this.#everOpened ? "reconnecting" : "connecting", { attempt: this.#attempt });
    let token;
    try {
      token = await this.#tokenForConnect();
    } catch (err) {
      if (seq !== this.#seq || this.#closed) return;
      if (err?.fatal) return this.#fail(err.message);
      this.#emitError("token", "getToken failed: " + (err?.message ?? err), err);
      return this.#retry();
    }
    if (seq !== this.#seq || this.#closed) return;

    const url = wsURL(this.#opts.url);
    url.searchParams.set("token", token);
    url.searchParams.delete("since");
    // A sync is coming: resuming first would replay what the state holds.
    // Resume from the last change the collections hold when that is older
    // than the last delivered (the changes between were not applied yet).
    let since = this.#lastId;
    if (this.#sync && this.#applied && this.#last && cmpKey(this.#applied, this.#last) < 0) since = this.#appliedId;
    if (since !== null && !(this.#sync && this.#needSync)) url.searchParams.set("since", since);
    // The subscription goes with the connect too, so that walcast filters
    // the replay; the subscribe frame sent on open confirms it.
    const sub = this.#subscription;
    url.searchParams.delete("types");
    url.searchParams.delete("committees");
    if (sub?.types) url.searchParams.set("types", sub.types.join(","));
    if (sub?.committees) url.searchParams.set("committees", sub.committees.join(","));
    let ws;
    try {
      ws = new this.#WebSocket(url.href);
    } catch (err) {
      this.#emitError("connect", String(err?.message ?? err), err);
      return this.#retry();
    }
    this.#ws = ws;
    this.#stats.connects++;
    let opened = false;
    this.#timers.connect = setTimeout(() => this.#abandon(ws, "connect timeout"), this.#opts.connectTimeout);
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      opened = true;
      clearTimeout(this.#timers.connect);
      this.#onOpen(ws);
    };
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#onClose(ev.code, ev.reason, opened);
    };
    // Browsers follow an error with a close event, but some WebSocket
    // implementations (Node 20's) do not after a refused connection: move
    // on unless the close event comes promptly.
    ws.onerror = () => {
      if (!opened) return this.#abandon(ws, "connection failed");
      setTimeout(() => this.#abandon(ws, "connection error"), 1000);
    };
  }

  async #tokenForConnect() {
    if (!this.#getToken) {
      const exp = tokenExpiry(this.#token);
      if (exp !== null && exp <= Date.now()) throw Object.assign(new Error("token expired"), { fatal: true });
      return this.#token;
    }
    const exp = tokenExpiry(this.#token);
    if (this.#token && !this.#needFreshToken && (exp === null || exp - Date.now() > 5000)) return this.#token;
    const token = await this.#getToken();
    if (typeof token !== "string" || !token) throw new Error("getToken returned no token");
    this.#token = token;
    this.#needFreshToken = false;
    return token;
  }

  #onOpen(ws) {
    this.#everOpened = true;
    this.#openedAt = Date.now();
    this.#failures = 0;
    this.#setStatus("open");
    // Resumed connections keep their collections (the replay keeps them
    // current) unless the token's scope changed meanwhile.
    if (this.#sync && scopeOf(this.#token) !== this.#scope) this.#needSync = true;
    if (this.#sync && this.#needSync) this.#sendSync();
    else this.#sendSubscription();
    this.#timers.ping = setInterval(() => this.#ping(ws), this.#opts.pingInterval);
    this.#scheduleRefresh();
  }

  #ping(ws) {
    if (ws !== this.#ws) return;
    this.#send({ type: "ping" });
    if (!this.#timers.dead) {
      this.#timers.dead = setTimeout(() => this.#abandon(ws, "no answer to ping"), this.#opts.pongTimeout);
    }
  }

  // abandon gives up on a connection that does not answer: its close
  // handshake would not complete either, so the client moves on at once.
  #abandon(ws, reason) {
    if (ws !== this.#ws) return;
    const opened = ws.readyState === 1;
    this.#detach();
    try { ws.close(); } catch { /* never opened */ }
    this.#onClosed(0, reason, opened);
  }

  #onClose(code, reason, opened) {
    this.#detach();
    this.#onClosed(code, reason, opened);
  }

  #onClosed(code, reason, opened) {
    if (this.#closed) return;
    if (!opened) this.#failures++;
    // Backoff restarts after a connection that lasted, not after any open:
    // a server that accepts and closes at once must not be hammered.
    else if (Date.now() - this.#openedAt > STABLE) this.#attempt = 0;
    if (code === 4001) {
      // The token expired before a fresh auth frame reached walcast.
      if (!this.#getToken) return this.#fail("token expired", code);
      this.#needFreshToken = true;
    } else if (code === 4003) {
      return this.#fail(reason || "token names another user", code);
    } else if (!opened && this.#getToken && this.#failures % 4 === 0) {
      // walcast refuses tokens with a plain HTTP 401 that browsers do not
      // show; after repeated failures, make sure the token is not the cause.
      this.#needFreshToken = true;
    }
    this.#retry({ code, reason });
  }

  #retry(info = {}) {
    if (this.#closed) return;
    const cap = Math.min(this.#opts.maxDelay, this.#opts.initialDelay * 2 ** Math.min(this.#attempt, 30));
    const delay = Math.round(Math.random() * cap); // full jitter
    this.#attempt++;
    this.#setStatus(this.#everOpened ? "reconnecting" : "connecting", { ...info, attempt: this.#attempt, delay });
    clearTimeout(this.#timers.retry);
    this.#timers.retry = setTimeout(() => this.#connectNow(), delay);
  }

  #fail(reason, code) {
    const ws = this.#ws;
    this.#detach();
    if (ws) {
      try { ws.close(1000); } catch { /* closed */ }
    }
    this.#closed = true;
    this.#seq++;
    this.#unlisten();
    this.#setStatus("closed", { code, reason });
    this.#handlers.clear();
  }

  #unlisten() {
    globalThis.removeEventListener?.("online", this.#wake);
    globalThis.document?.removeEventListener?.("visibilitychange", this.#wake);
  }

  #detach() {
    const ws = this.#ws;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.#ws = null;
    clearTimeout(this.#timers.connect);
    clearInterval(this.#timers.ping);
    clearTimeout(this.#timers.dead);
    clearTimeout(this.#timers.refresh);
    clearTimeout(this.#timers.sync);
    this.#timers.dead = 0;
    // A sync cut short is asked for again on the next connection (#needSync
    // is still set); its rows so far are dropped.
    this.#inFlight = this.#syncAgain = false;
    this.#staged.clear();
    this.#pendingAuth = null;
  }

  #send(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  #sendSubscription() {
    const s = this.#subscription;
    if (!s) return;
    const frame = { type: "subscribe" };
    if (s.types) frame.types = s.types;
    if (s.committees) frame.committees = s.committees;
    this.#send(frame);
  }

  // ---- token refresh ---------------------------------------------------

  #scheduleRefresh(retryIn) {
    clearTimeout(this.#timers.refresh);
    if (!this.#getToken || this.#opts.authRefresh === false || !this.#ws) return;
    const exp = tokenExpiry(this.#token);
    if (exp === null) return;
    const left = exp - Date.now();
    const delay = retryIn ?? Math.max(0, left - Math.min(this.#opts.refreshMargin, left / 2));
    const ws = this.#ws;
    this.#timers.refresh = setTimeout(() => this.#refresh(ws, exp), delay);
  }

  async #refresh(ws, oldExp) {
    let token;
    try {
      token = await this.#getToken();
    } catch (err) {
      if (ws !== this.#ws) return;
      this.#emitError("token", "getToken failed: " + (err?.message ?? err), err);
      return this.#scheduleRefresh(Math.max(1000, Math.min(10000, (oldExp - Date.now()) / 4)));
    }
    if (ws !== this.#ws || typeof token !== "string" || !token) return;
    const exp = tokenExpiry(token);
    if (exp !== null && exp <= oldExp) {
      // getToken gave the same token again; try later, until it expires.
      return this.#scheduleRefresh(Math.max(1000, Math.min(10000, (oldExp - Date.now()) / 4)));
    }
    this.#token = token;
    this.#sendAuth(ws, token);
    this.#scheduleRefresh();
  }

  #sendAuth(ws, token) {
    if (ws !== this.#ws) return;
    if (this.#send({ type: "auth", token })) this.#pendingAuth = token;
  }

  // ---- frames ----------------------------------------------------------

  #onFrame(data) {
    this.#stats.received++;
    clearTimeout(this.#timers.dead);
    this.#timers.dead = 0;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      return this.#emitError("bad_frame", "walcast sent a frame that is not JSON", err);
    }
    if (msg === null || typeof msg !== "object") return;
    if (msg.id !== undefined) return this.#onChange(msg);
    switch (msg.type) {
      case "welcome":
        // Connected without a resume position: everything after this one
        // reaches us live, so it is where to resume from.
        if (this.#lastId === null && parseId(msg.position)) {
          this.#lastId = msg.position;
          this.#last = parseId(msg.position);
        }
        break;
      case "resync_required":
        // The connection continues from where walcast says: ids after it
        // follow, even if they are lower than ids of the lost history.
        if (parseId(msg.position)) {
          this.#lastId = msg.position;
          this.#last = parseId(msg.position);
        }
        // Changes are missing from the collections: fill them again. Sent
        // at once even during a sync, which walcast may have cut short.
        if (this.#sync) {
          this.#inFlight = false;
          this.#requestSync();
        }
        break;
      case "state":
        return this.#onState(msg);
      case "state_end":
        return this.#onStateEnd(msg);
      case "auth_ok":
        this.#pendingAuth = null;
        // A token with another role or committees: other rows are in scope.
        if (this.#sync && !this.#needSync && scopeOf(this.#token) !== this.#scope) this.#requestSync();
        break;
      case "error":
        if (msg.code === "rate_limited") this.#onRateLimited(msg);
        else if (msg.code === "state_unavailable" || msg.code === "bad_sync") this.#onStateUnavailable(msg);
        else if (msg.code === "auth_failed") this.#pendingAuth = null;
        return this.#emit("error", msg);
    }
    this.#emit(msg.type, msg);
  }

  // onRateLimited retries what walcast refused for now: an auth frame (the
  // message names it; the token in force stays meanwhile) or a sync frame
  // (the client sends no other limited frame), after the wait walcast
  // names or a growing backoff.
  #onRateLimited(msg) {
    const wait = retryAfterMs(msg.message);
    const jitter = Math.round(Math.random() * 500);
    if (this.#pendingAuth && /auth/i.test(String(msg.message))) {
      const ws = this.#ws, token = this.#pendingAuth;
      this.#pendingAuth = null;
      clearTimeout(this.#timers.refresh);
      this.#timers.refresh = setTimeout(() => {
        this.#sendAuth(ws, token);
        this.#scheduleRefresh();
      }, (wait ?? 2000) + jitter);
      return;
    }
    if (this.#sync && this.#inFlight) this.#retrySync(wait);
  }

  // onStateUnavailable: walcast could not send its state (state_unavailable)
  // or refused the sync frame (bad_sync: a type it does not know). "retry"
  // in the message means for now (it could not read it): try again after a
  // backoff; otherwise the next connection or subscribe() asks again.
  #onStateUnavailable(msg) {
    if (!this.#sync || !this.#inFlight) return;
    if (/retry/i.test(String(msg.message))) return this.#retrySync(null);
    this.#inFlight = false;
  }

  // retrySync sends the sync walcast refused again after wait (ms, when it
  // said) or a backoff of 1 s doubling up to maxDelay, with jitter.
  #retrySync(wait) {
    this.#inFlight = false;
    const backoff = Math.min(this.#opts.maxDelay, 1000 * 2 ** Math.min(this.#syncAttempt, 10));
    this.#syncAttempt++;
    clearTimeout(this.#timers.sync);
    this.#timers.sync = setTimeout(() => {
      if (this.#needSync && !this.#inFlight) this.#sendSync();
    }, Math.max(wait ?? 0, backoff) + Math.round(Math.random() * 500));
  }

  // ---- synced collections ----------------------------------------------

  // requestSync asks walcast for the state of the subscription's tables: at
  // once when connected and no sync is in flight, after the one in flight
  // otherwise (so rapid subscription changes cost one sync each at most),
  // and on the next connection when not connected.
  #requestSync() {
    this.#needSync = true;
    if (this.#inFlight) this.#syncAgain = true;
    else this.#sendSync();
  }

  #sendSync() {
    clearTimeout(this.#timers.sync);
    const s = this.#subscription;
    const frame = { type: "sync" };
    if (s?.types) frame.types = s.types;
    if (s?.committees) frame.committees = s.committees;
    if (!this.#send(frame)) return; // not open: sent when it opens
    this.#inFlight = true;
    this.#syncAgain = false;
    this.#scope = scopeOf(this.#token);
  }

  // onState stages a chunk of a table's rows until state_end; a key sent
  // twice keeps its newer version.
  #onState(msg) {
    if (typeof msg.table !== "string" || !Array.isArray(msg.rows)) {
      return this.#emitError("bad_frame", "walcast sent a state frame without table or rows");
    }
    let st = this.#staged.get(msg.table);
    if (!st) this.#staged.set(msg.table, (st = { type: msg.message_type ?? null, rows: new Map() }));
    for (const r of msg.rows) {
      if (typeof r?.key !== "string" || !parseId(r.version)) {
        this.#emitError("bad_frame", `walcast sent a state row without key or version in ${msg.table}`);
        continue;
      }
      const prev = st.rows.get(r.key);
      if (prev && idOrder(r.version, prev.version) <= 0) continue;
      st.rows.set(r.key, { data: r.data, version: r.version, oversized: r.oversized === true });
      this.#stats.stateRows++;
    }
  }

  // onStateEnd commits a sync: the tables it lists replace their
  // collections (the rest are out of scope now), and the resume position
  // moves to the state's position: the changes after it follow.
  #onStateEnd(msg) {
    const listed = Array.isArray(msg.tables) ? msg.tables.filter((t) => typeof t === "string") : [];
    const tables = new Map();
    for (const name of listed) {
      const st = this.#staged.get(name);
      const t = this.#tables.get(name) ?? new SyncedTable(name, st?.type);
      t[REPLACE](st?.rows ?? new Map(), st?.type);
      tables.set(name, t);
    }
    this.#tables = tables;
    this.#staged.clear();
    const unavailable = Array.isArray(msg.unavailable) ? msg.unavailable.filter((u) => typeof u?.table === "string") : [];
    this.#unavailable = new Map(unavailable.map((u) => [u.table, String(u.reason ?? "")]));
    const pos = parseId(msg.position);
    if (pos && (!this.#last || cmpKey(pos, this.#last) > 0)) {
      this.#last = pos;
      this.#lastId = msg.position;
    }
    // The changes after the position follow, also those this client
    // delivered before (the state may not hold them).
    this.#applied = pos;
    this.#appliedId = pos ? msg.position : null;
    this.#stats.syncs++;
    this.#inFlight = false;
    this.#syncAttempt = 0;
    this.#everSynced = true;
    if (this.#syncAgain) this.#sendSync();
    else this.#needSync = false;
    this.#emit("synced", { type: "synced", position: msg.position, tables: listed, unavailable: this.unavailable });
  }

  // applyToTable keeps a collection current with a change, by the version
  // rule, and returns the row events it caused.
  #applyToTable(msg) {
    let t = this.#tables.get(msg.table);
    if (!t) {
      // A table with no rows when the state was sent may be left out of
      // state_end: its collection starts empty with its first change.
      if (!this.#everSynced || typeof msg.key !== "string" || typeof msg.table !== "string") return [];
      if (this.#unavailable.has(msg.table) || !this.#covers(msg.type)) return [];
      t = new SyncedTable(msg.table, msg.type);
      this.#tables.set(msg.table, t);
    }
    const ev = (op, key, row, previous) =>
      ({ type: "row", op, table: t.name, messageType: msg.type, key, row, previous, version: msg.id, change: msg });
    if (msg.action === "truncated") return t[CLEAR](msg.id).map(([key, prev]) => ev("removed", key, undefined, prev.data));
    if (typeof msg.key !== "string") return [];
    if (msg.action === "deleted") {
      const prev = t[DELETE](msg.key, msg.id);
      return prev ? [ev("removed", msg.key, undefined, prev.data)] : [];
    }
    // An update of the primary key moves the row: old_key is gone.
    const out = [];
    let base;
    if (typeof msg.old_key === "string" && msg.old_key !== msg.key) {
      const gone = t[DELETE](msg.old_key, msg.id);
      if (gone) out.push(ev("removed", msg.old_key, undefined, gone.data));
      base = gone?.data;
    }
    const prev = t[UPSERT](msg.key, msg.data, msg.id, msg.type, msg.unchanged, base, msg.oversized);
    if (prev !== undefined) out.push(ev(prev ? "changed" : "added", msg.key, t.get(msg.key), prev?.data));
    return out;
  }

  // covers tells whether the subscription, and so the sync, includes a type.
  #covers(type) {
    const types = this.#subscription?.types;
    return !types || types.includes(type);
  }

  #onChange(msg) {
    const key = parseId(msg.id);
    if (!key) return this.#emitError("bad_frame", `walcast sent a change with a bad id: ${msg.id}`);
    // The collection first, so handlers of the change read the new rows.
    const rows = this.#applyChange(key, msg);
    if (this.#last && cmpKey(key, this.#last) <= 0) {
      this.#stats.skipped++; // a duplicate, or older than what we delivered
      for (const e of rows) this.#emit("row", e);
      return;
    }
    this.#last = key;
    this.#lastId = msg.id;
    if (!this.#wanted(msg)) {
      this.#stats.filtered++;
      return;
    }
    this.#stats.delivered++;
    this.#emit(msg.type, msg);
    this.#emit("*", msg);
    for (const e of rows) this.#emit("row", e);
  }

  // applyChange keeps the collections current with a change after the
  // last one applied to them (#applied), whether or not its event was
  // delivered already: a sync's position may be older than changes this
  // client delivered (or was told of at welcome) before the sync, and the
  // changes after the position must reach the collections all the same.
  #applyChange(key, msg) {
    if (!this.#sync || !this.#everSynced || !this.#wanted(msg)) return [];
    if (this.#applied && cmpKey(key, this.#applied) <= 0) return [];
    this.#applied = key;
    this.#appliedId = msg.id;
    return this.#applyToTable(msg);
  }

  // wanted applies the subscription locally, as walcast does: a replay
  // requested with ?since= starts before the subscribe frame is read.
  #wanted(msg) {
    const s = this.#subscription;
    if (!s) return true;
    if (s.types && !s.types.includes(msg.type)) return false;
    const committee = msg.data?.committee_id;
    if (s.committees && committee != null && !s.committees.includes(Number(committee))) return false;
    return true;
  }

  // ---- events ----------------------------------------------------------

  #setStatus(status, info = {}) {
    const changed = status !== this.#status;
    this.#status = status;
    // Retries while reconnecting are reported too (with attempt and delay).
    if (changed || info.delay !== undefined) this.#emit("status", status, info);
  }

  #emitError(code, message, cause) {
    this.#emit("error", { type: "error", code, message, cause });
  }

  #emit(type, ...args) {
    const hs = this.#handlers.get(type);
    if (!hs) return;
    for (const h of [...hs]) {
      if (this.#closed && type !== "status") return; // a handler called close()
      try {
        h(...args);
      } catch (err) {
        report(err); // a handler's bug must not stop delivery
      }
    }
  }
}

export default WalcastClient;
