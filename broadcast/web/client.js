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
  #timers = { retry: 0, connect: 0, ping: 0, dead: 0, refresh: 0 };
  #stats = { received: 0, delivered: 0, skipped: 0, filtered: 0, connects: 0 };
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

  /** Counters: frames received, changes delivered, skipped (duplicates or older ids), filtered, connects. */
  get stats() { return { ...this.#stats }; }

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
    this.#sendSubscription();
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
    if (this.#lastId !== null) url.searchParams.set("since", this.#lastId);
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
    this.#sendSubscription();
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
    this.#timers.dead = 0;
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
    this.#send({ type: "auth", token });
    this.#scheduleRefresh();
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
        break;
      case "error":
        return this.#emit("error", msg);
    }
    this.#emit(msg.type, msg);
  }

  #onChange(msg) {
    const key = parseId(msg.id);
    if (!key) return this.#emitError("bad_frame", `walcast sent a change with a bad id: ${msg.id}`);
    if (this.#last && cmpKey(key, this.#last) <= 0) {
      this.#stats.skipped++; // a duplicate, or older than what we delivered
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
