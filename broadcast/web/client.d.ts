// TypeScript declarations for walcast's browser client, client.js.
// Guide: docs/client.md. Frames: docs/protocol.md.

/** Connection state. `idle` only until the first connect, a microtask after construction. */
export type Status = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export type ChangeType = "guarantee_update" | "attendance_update" | "voting_update" | "dashboard_update";
export type Action = "created" | "updated" | "deleted" | "truncated";

/** One row change: a frame with an `id`. */
export interface Change<Type extends ChangeType = ChangeType, Data = Record<string, unknown>> {
  /** "<commit LSN>-<ordinal>", decimal; increasing in commit order; the resume position. Compare with compareIds. */
  id: string;
  type: Type;
  action: Action;
  /** "schema.table", e.g. "public.guarantee". */
  table: string;
  /** The row's primary key as a JSON array of its values ("[7]"), for tables with one; absent for `truncated`. */
  key?: string;
  /** On `updated` that changed the primary key: the key the row had before. */
  old_key?: string;
  /** The row after the change; before it for `deleted`; `{}` for `truncated`. */
  data: Data;
  /** On `updated`, where the WAL carried them: the changed columns' previous values. */
  old?: Record<string, unknown>;
  /** TOASTed columns that did not change and are left out of `data`. */
  unchanged?: string[];
  /** The row was over 1 MiB: `data` holds only its key and scope columns; refetch it. */
  oversized?: boolean;
  omitted?: string[];
  /** The transaction's commit LSN, decimal: compare with compareVersions to spot a stale copy of a row. */
  version: string;
  /** The commit time, RFC 3339 UTC with microseconds. */
  timestamp: string;
}

/** A `guarantee` row, as schema/election.sql defines it. Your table may have more columns. */
export interface GuaranteeRow {
  id: number;
  committee_id: number;
  user_id: number;
  elector_id: number | null;
  elector_name: string;
  status: "strong" | "medium" | "weak";
  notes: string;
  created_at: string;
  updated_at: string;
  [column: string]: unknown;
}

export interface AttendanceRow {
  id: number;
  committee_id: number;
  elector_id: number;
  user_id: number;
  attended: boolean;
  marked_at: string;
  [column: string]: unknown;
}

export interface VoteCountRow {
  id: number;
  committee_id: number;
  candidate_id: number;
  votes: number;
  updated_at: string;
  [column: string]: unknown;
}

export interface ElectionResultsRow {
  id: number;
  /** null: an election-wide result. */
  committee_id: number | null;
  candidate_id: number;
  total_votes: number;
  /** numeric: a string, exactly as PostgreSQL prints it. */
  percentage: string;
  rank: number | null;
  generated_at: string;
  details: unknown;
  [column: string]: unknown;
}

export type VotingData =
  | { vote_count: VoteCountRow; committee_id: number | null }
  | { election_results: ElectionResultsRow; action_type: "results_generated" | "results_updated"; committee_id: number | null };

export type GuaranteeUpdate = Change<"guarantee_update", GuaranteeRow>;
export type AttendanceUpdate = Change<"attendance_update", AttendanceRow>;
export type VotingUpdate = Change<"voting_update", VotingData>;
export type DashboardUpdate = Change<"dashboard_update", Record<string, unknown>> & { dashboard_type?: "personal" | "supervisor" | "admin" };
export type ChangeMessage = GuaranteeUpdate | AttendanceUpdate | VotingUpdate | DashboardUpdate;

export interface Subscription {
  /** Only these message types; null or omitted: all. */
  types?: ChangeType[] | null;
  /** Only these committees (messages without a committee still pass); null or omitted: all the token allows. */
  committees?: number[] | null;
}

export interface StatusInfo {
  /** The WebSocket close code that led here: 4001 token expired, 4003 another user, 4008 too slow, 1001 shutdown, 1006 or 0 lost. */
  code?: number;
  reason?: string;
  /** While reconnecting: the number of this retry and how long it waits, in ms. */
  attempt?: number;
  delay?: number;
}

export interface WelcomeFrame { type: "welcome"; position: string }
export interface ResyncFrame { type: "resync_required"; reason: string }
export interface SubscribedFrame { type: "subscribed"; types: ChangeType[] | null; committees: number[] | null }
export interface ErrorFrame {
  type: "error";
  /** walcast's codes (bad_frame, unknown_type, bad_subscribe, bad_position, bad_auth, auth_failed, rate_limited, state_unavailable, bad_sync) or the client's (token, connect, internal). */
  code: string;
  message: string;
  cause?: unknown;
}

/** A state_end committed: the collections were filled again. */
export interface SyncedEvent {
  type: "synced";
  /** The id the state is consistent with (at least); the changes after it follow. */
  position: string;
  /** The tables whose collections were replaced. */
  tables: string[];
  /** Tables of the subscription walcast keeps no state for (off, not seeded, no primary key). */
  unavailable: { table: string; reason: string }[];
}

/** A change to a synced collection's rows (sync: true). Not raised for the rows a sync replaces: see "synced". */
export interface RowEvent<Data = Record<string, unknown>> {
  type: "row";
  op: "added" | "changed" | "removed";
  table: string;
  messageType: ChangeType;
  key: string;
  /** The row now (added, changed). */
  row?: Data;
  /** The row before (changed, removed). */
  previous?: Data;
  /** The id of the change. */
  version: string;
  change: ChangeMessage;
}

/**
 * One table's rows in the client's scope, by primary key, kept by the
 * client (sync: true), iterated in version order (the row changed last
 * comes last). Read-only for the application.
 */
export declare class SyncedTable<Data = Record<string, unknown>> implements Iterable<[string, Data]> {
  constructor(name: string, type?: ChangeType | null);
  /** "public.guarantee". */
  readonly name: string;
  /** Its message type, or null until walcast has sent one of its rows. */
  readonly type: ChangeType | null;
  readonly size: number;
  /** Grows with every change to the rows. */
  readonly revision: number;
  has(key: string): boolean;
  get(key: string): Data | undefined;
  /** The id of the change that last wrote the row. */
  version(key: string): string | undefined;
  /** The row was over walcast's size limit: its data holds only its key and scope columns; refetch it. */
  oversized(key: string): boolean;
  keys(): IterableIterator<string>;
  values(): IterableIterator<Data>;
  entries(): IterableIterator<[string, Data]>;
  [Symbol.iterator](): IterableIterator<[string, Data]>;
  /** The rows as an array: the same (frozen) array until the next change; a new filtered one with filter. */
  rows(filter?: (row: Data) => boolean): readonly Data[];
}

export interface EventMap {
  guarantee_update: (m: GuaranteeUpdate) => void;
  attendance_update: (m: AttendanceUpdate) => void;
  voting_update: (m: VotingUpdate) => void;
  dashboard_update: (m: DashboardUpdate) => void;
  /** Every change, after its type's handlers. */
  "*": (m: ChangeMessage) => void;
  status: (status: Status, info: StatusInfo) => void;
  /** Changes you should have had are gone from walcast's history: refetch your state. Live changes follow. */
  resync_required: (m: ResyncFrame) => void;
  welcome: (m: WelcomeFrame) => void;
  subscribed: (m: SubscribedFrame) => void;
  auth_ok: (m: { type: "auth_ok" }) => void;
  pong: (m: { type: "pong" }) => void;
  error: (e: ErrorFrame) => void;
  /** sync: true: a row of a synced collection was added, changed or removed by a change. */
  row: (e: RowEvent) => void;
  /** sync: true: a sync completed; the collections of its tables were replaced. */
  synced: (e: SyncedEvent) => void;
}

export interface WalcastClientOptions {
  /** walcast's /ws: "wss://walcast.example.com/ws", or an http(s) origin (the /ws path is added). Default: /ws on the page's host. */
  url?: string;
  /** An access token. Without getToken, the client closes when it expires (code 4001). */
  token?: string;
  /** Returns a valid access token: called to connect, before the token's exp (then sent as an auth frame) and after a 4001. */
  getToken?: () => string | Promise<string>;
  /** Sent after every connect. */
  subscribe?: Subscription;
  /** Resume after this message id at the first connect ("0-0": everything walcast still has). Ignored with sync until the first sync. */
  since?: string;
  /**
   * Keep a synced collection of every table in the subscription: the rows
   * from walcast's state (a sync frame at connect), then kept current from
   * changes. Re-synced after resync_required, a subscription change, a token
   * with another scope, or a connection lost during a sync; other reconnects resume.
   */
  sync?: boolean;
  /** The WebSocket class; default globalThis.WebSocket (Node 20: --experimental-websocket, or the ws package). */
  WebSocket?: new (url: string) => WebSocket;
  /** Backoff: the first retry waits up to this (full jitter), doubling to maxDelay. Defaults 500 and 30000 ms. */
  initialDelay?: number;
  maxDelay?: number;
  /** An opening handshake slower than this is abandoned. Default 10000 ms. */
  connectTimeout?: number;
  /** A ping this often (default 20000 ms); no frame within pongTimeout (default 10000 ms) after it: reconnect. */
  pingInterval?: number;
  pongTimeout?: number;
  /** With getToken: ask for a new token this long before exp (at most half the remaining life). Default 60000 ms. */
  refreshMargin?: number;
  /** With getToken: refresh in place with auth frames (default true); false waits for 4001 and reconnects. */
  authRefresh?: boolean;
}

export interface ClientStats {
  received: number;
  delivered: number;
  /** Changes not delivered because their id was not after the last one (duplicates). */
  skipped: number;
  /** Changes not delivered because the subscription excludes them. */
  filtered: number;
  connects: number;
  /** Syncs completed (state_end frames). */
  syncs: number;
  /** Rows received in state frames. */
  stateRows: number;
}

export declare class WalcastClient {
  constructor(options: WalcastClientOptions);
  readonly status: Status;
  /** The resume position: the last delivered change's id, or the position at connect before any; null before the first connect. */
  readonly lastId: string | null;
  readonly subscription: { types: ChangeType[] | null; committees: number[] | null } | null;
  readonly stats: ClientStats;
  /** Adds a handler and returns a function that removes it. */
  on<K extends keyof EventMap>(type: K, handler: EventMap[K]): () => void;
  off<K extends keyof EventMap>(type: K, handler: EventMap[K]): void;
  /** Narrows delivery; remembered and sent again after every reconnect. subscribe() resets to everything. */
  subscribe(sub?: Subscription): void;
  /** Ends the client for good. */
  close(): void;
  /** sync: true: the collections are complete and current (a sync completed and no new one is under way). */
  readonly synced: boolean;
  /** sync: true: the synced collections by table name (a copy of the map; the tables are live). */
  readonly tables: Map<string, SyncedTable>;
  /** sync: true: tables of the subscription without state, and why. */
  readonly unavailable: { table: string; reason: string }[];
  /** The collection of "public.guarantee" (or "guarantee" when only one schema has it), or undefined. */
  table<Data = Record<string, unknown>>(name: string): SyncedTable<Data> | undefined;
  /** The rows of a table (those filter keeps), [] when there is no such collection. */
  rows<Data = Record<string, unknown>>(name: string, filter?: (row: Data) => boolean): readonly Data[];
  /** sync: true: fill the collections again. Throws a TypeError without sync. */
  resync(): void;
}
export default WalcastClient;

export declare const CHANGE_TYPES: readonly ChangeType[];
/** [LSN, ordinal] of a message id, or null. */
export declare function parseId(id: string): [bigint, bigint] | null;
/** Orders two message ids: negative, 0 or positive. Throws a TypeError for a non-id. */
export declare function compareIds(a: string, b: string): number;
/** Orders two `version` values (commit LSNs). */
export declare function compareVersions(a: string, b: string): number;
/** A JWT's claims, unverified, or null. */
export declare function decodeToken(token: string): Record<string, unknown> | null;
/** A JWT's exp in ms since the epoch, or null. */
export declare function tokenExpiry(token: string): number | null;
