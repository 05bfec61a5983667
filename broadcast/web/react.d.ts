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
 * Keeps one WalcastClient open while mounted and enabled. A new url, enabled
 * or since reconnects, and a new token when there is no getToken; new
 * callbacks or getToken do not (the latest are used); a new subscription
 * (compared by value) is sent on the open connection.
 */
export declare function useWalcast(options: UseWalcastOptions): UseWalcastResult;
export default useWalcast;
