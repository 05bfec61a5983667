// useWalcastRows and useWalcast: walcast's client as React hooks
// (@walcast/client/react). React is an optional peer dependency of
// @walcast/client: only this module imports it. Guide: docs/client.md.
//
//   import { useWalcastRows } from "@walcast/client/react";
//   const { rows, synced } = useWalcastRows({
//     url: "wss://walcast.example.com/ws",
//     getToken: refreshIfNeeded,
//     table: "public.guarantee",
//     filter: mine,                // optional, a stable function
//   });
//
// The event hook, for code that handles each change itself:
//
//   import { useWalcast } from "@walcast/client/react";
//   const { status } = useWalcast({
//     url: "wss://walcast.example.com/ws",
//     getToken: refreshIfNeeded,   // your access token, refreshed when needed
//     enabled: isLoggedIn,
//     subscribe: { committees: [committeeId] },
//     onMessage: (m) => dispatch({ type: `walcast/${m.type}`, payload: m }),
//     onResync: () => dispatch({ type: "walcast/resync" }),
//   });
import { useEffect, useMemo, useRef, useState } from "react";
import { WalcastClient } from "./client.js";

/**
 * useWalcast keeps one WalcastClient open while the component is mounted and
 * enabled is not false, and returns { status, client }.
 *
 * A new url, enabled, since or sync makes a new connection, and so does a
 * new token when there is no getToken. New callbacks or a new getToken do not:
 * the latest ones are used. A new subscription (by value,
 * not by identity) is sent on the open connection and kept for reconnects.
 * Other options (WebSocket, timeouts) are read when a connection is made.
 */
export function useWalcast(options) {
  const { url, enabled = true, since, subscribe } = options;
  const sync = options.sync === true;
  // A plain token is read at connect, so a new one needs a new connection;
  // getToken is asked again by the client itself.
  const plainToken = typeof options.getToken === "function" ? null : options.token;
  const latest = useRef(options);
  latest.current = options; // callbacks and getToken without reconnecting
  const [status, setStatus] = useState(enabled ? "connecting" : "idle");
  const [client, setClient] = useState(null);

  // The subscription at connect time; later changes go through the
  // effect below. sent is the client and the subscription it has.
  const subKey = JSON.stringify(subscribe ?? null);
  const subRef = useRef(subscribe);
  subRef.current = subscribe;
  const sent = useRef({ client: null, key: subKey });

  useEffect(() => {
    if (!enabled) {
      setStatus("idle");
      return undefined;
    }
    const o = latest.current;
    const { onMessage, onStatus, onResync, onError, getToken, enabled: _e, ...clientOptions } = o;
    const c = new WalcastClient({
      ...clientOptions,
      ...(typeof getToken === "function" ? { getToken: () => latest.current.getToken() } : {}),
      subscribe: subRef.current ?? undefined,
    });
    sent.current = { client: c, key: JSON.stringify(subRef.current ?? null) };
    const off = [
      c.on("status", (s, info) => {
        setStatus(s);
        latest.current.onStatus?.(s, info);
      }),
      c.on("*", (m) => latest.current.onMessage?.(m)),
      c.on("resync_required", (m) => latest.current.onResync?.(m)),
      c.on("error", (e) => latest.current.onError?.(e)),
    ];
    setStatus(c.status);
    setClient(c);
    return () => {
      for (const f of off) f();
      c.close();
      setClient((cur) => (cur === c ? null : cur));
    };
  }, [url, enabled, since, plainToken, sync]);

  // A new subscription goes to the open connection (the client keeps it
  // for reconnects); the one a client was made with is not sent twice.
  useEffect(() => {
    if (!client || (sent.current.client === client && sent.current.key === subKey)) return;
    sent.current = { client, key: subKey };
    client.subscribe(subRef.current ?? {});
  }, [client, subKey]);

  return { status, client };
}

/**
 * useRows returns the rows of one synced table of client (made with
 * sync: true), those that filter keeps when given, and re-renders the
 * component when they change: at a sync and at each row change, at most once
 * per microtask. The array is the same between changes (with a filter: as
 * long as filter is the same function). [] while there is no client or no
 * such table.
 */
export function useRows(client, table, filter) {
  const [, setTick] = useState(0);
  useEffect(() => {
    if (!client) return undefined;
    let queued = false, mounted = true;
    const bump = () => {
      if (queued) return;
      queued = true;
      queueMicrotask(() => {
        queued = false;
        if (mounted) setTick((n) => n + 1);
      });
    };
    const offs = [
      client.on("row", (e) => { if (e.table === client.table(table)?.name) bump(); }),
      client.on("synced", bump),
      client.on("resync_required", bump), // synced turns false until the new sync
    ];
    bump(); // rows may have come between render and this effect
    return () => {
      mounted = false;
      offs.forEach((off) => off());
    };
  }, [client, table]);
  const t = client?.table(table);
  const all = t ? t.rows() : EMPTY;
  return useMemo(() => (typeof filter === "function" ? all.filter(filter) : all), [all, filter]);
}

const EMPTY = Object.freeze([]);

/**
 * useWalcastRows keeps a client with synced collections (useWalcast with
 * sync: true) and returns the rows of options.table (those options.filter
 * keeps), re-rendering when they change, with { status, synced, client }.
 * The subscription (options.subscribe) decides which tables are synced;
 * another component's useRows(client, table) reads the same client.
 */
export function useWalcastRows(options) {
  const { table, filter, ...rest } = options;
  const { status, client } = useWalcast({ ...rest, sync: true });
  const rows = useRows(client, table, filter);
  return { rows, status, synced: client?.synced ?? false, unavailable: client?.unavailable ?? EMPTY, client };
}

export default useWalcast;
