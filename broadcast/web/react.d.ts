// TypeScript declarations for @walcast/client/react (react.js).
// Guide: docs/client.md.

import type {
  ChangeMessage,
  ErrorFrame,
  ResyncFrame,
  Status,
  StatusInfo,
  WalcastClient,
  WalcastClientOptions,
} from "./client.js";

export interface UseWalcastOptions extends WalcastClientOptions {
  /** false while logged out: no connection (status "idle"). Default true. */
  enabled?: boolean;
  /** Every change delivered, in commit order, once. */
  onMessage?: (m: ChangeMessage) => void;
  /** Every change of the connection's status. */
  onStatus?: (status: Status, info: StatusInfo) => void;
  /** Changes you should have had are gone from walcast's history: refetch your state. */
  onResync?: (m: ResyncFrame) => void;
  /** Errors walcast reports (bad token, rate limits, …) and the client's own. */
  onError?: (e: ErrorFrame) => void;
}

export interface UseWalcastResult {
  /** The connection's status; re-renders the component when it changes. */
  status: Status;
  /** The open client (null while disabled), for subscribe() or lastId. */
  client: WalcastClient | null;
}

/**
 * Keeps one WalcastClient open while mounted and enabled. A new url, enabled,
 * since or sync reconnects, and a new token when there is no getToken; new
 * callbacks or getToken do not (the latest are used); a new subscription
 * (compared by value) is sent on the open connection.
 */
export declare function useWalcast(options: UseWalcastOptions): UseWalcastResult;
/**
 * The rows of one synced table of client (made with sync: true), those
 * filter keeps; re-renders at each sync and row change. The same array
 * between changes (with a filter: while filter is the same function).
 * [] while client is null or has no such table.
 */
export declare function useRows<Data = Record<string, unknown>>(
  client: WalcastClient | null,
  table: string,
  filter?: (row: Data) => boolean,
): readonly Data[];

export interface UseWalcastRowsOptions<Data = Record<string, unknown>> extends UseWalcastOptions {
  /** "public.guarantee", or "guarantee" when only one schema has it. Its type must be in the subscription. */
  table: string;
  /** Keeps only the rows it returns true for; pass a stable function (useCallback) for big tables. */
  filter?: (row: Data) => boolean;
}

export interface UseWalcastRowsResult<Data = Record<string, unknown>> extends UseWalcastResult {
  /** The table's rows in the token's and the subscription's scope, current. */
  rows: readonly Data[];
  /** A sync completed and no new one is under way. */
  synced: boolean;
  /** Tables of the subscription walcast keeps no state for, and why. */
  unavailable: { table: string; reason: string }[];
}

/** useWalcast with sync: true, returning the rows of options.table. */
export declare function useWalcastRows<Data = Record<string, unknown>>(
  options: UseWalcastRowsOptions<Data>,
): UseWalcastRowsResult<Data>;

export default useWalcast;
