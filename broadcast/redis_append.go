package broadcast

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/schema"
)

// appendScript adds many entries in one command. One command per chunk,
// instead of one XADD per message, matters most with appendfsync always:
// Redis fsyncs once per event-loop turn, and a turn reads only so much of
// a pipeline, but a whole script's writes share one fsync. Entries Redis
// refuses as not newer than the stream's top were stored before (a change
// re-read from WAL) and are skipped, as with single XADDs.
//
// Trimming keeps --history changes: dashboard entries are not counted
// against it. The stream is trimmed once per call, after its entries
// (one XTRIM instead of a MAXLEN on every XADD). Their ids are listed, in order, in a list next to the
// stream, and the stream's MAXLEN is history plus the dashboards it holds.
// A burst of one dashboard per user therefore does not push changes out
// of resume history; dashboards themselves are never replayed (the newest
// of each is kept in the dashboards hash). They are counted up to four
// times history: a capture restarting in a loop emits every dashboard at
// each start without a change to age them out, and the stream must stay
// bounded (at most five times history entries).
//
// Before appending, the script checks that the stream reaches the newest
// entry this bus counted as stored (ARGV[2]; see redis_lost.go): a primary
// that lacks it lost confirmed entries, and nothing may be appended after
// the hole. The stream's reach is kept in a key of its own (the top key,
// written by this script in the same call as the entries, so a replica or
// a restarted Redis holds both or neither), read for the price of a GET
// instead of an XINFO STREAM per call; a stream that is gone, or a top
// key that is (a stream written before it was kept), falls back to XINFO.
//
// The live state (redis_state.go) is updated in the same call: a change
// the stream stores is applied to the state by keep (see stateLua), so
// that state and stream never disagree. A change refused as stored before
// is already reflected in the state.
//
// KEYS: stream, dashboards hash, dashboard ids list, state meta, top key. ARGV[1]:
// history (0: no trim); ARGV[2]: the newest id stored ("" for none);
// ARGV[3]: --state-max-rows (0: no state); ARGV[4]: the reason a table
// over it is off; then per message the entryStride arguments of
// entryArgs.message ("" for absent ones). It returns the number of
// entries stored, then the tables the limit turned off.
// The entry's field names come from the Go constants (see luaFields), so
// that the writer here and the reader in decodeEntry cannot disagree.
var appendScript = redis.NewScript(luaFields() + stateLua + appendScriptSrc)

// appendScriptSrc is appendScript's own part.
const appendScriptSrc = `
local maxlen = tonumber(ARGV[1])
-- The top key speaks for the stream only while the stream exists.
local top = false
if redis.call('EXISTS', KEYS[1]) == 1 then top = redis.call('GET', KEYS[5]) end
if ARGV[2] ~= '' then
  local last = top
  if not last then
    -- No top recorded (a stream written before it was kept): ask the stream.
    last = '0-0'
    local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
    if type(info) == 'table' and not info.err then
      for j = 1, #info, 2 do
        if info[j] == 'last-generated-id' then last = info[j+1] end
      end
    end
  end
  if older(last, ARGV[2]) then return redis.error_reply('` + lostPrefix + ` ' .. last) end
end
local maxrows = tonumber(ARGV[3])
local floor = redis.call('HGET', KEYS[4], 'floor') or ''
local dashes = 0
if maxlen > 0 then dashes = math.min(redis.call('LLEN', KEYS[3]), 4 * maxlen) end
local stored = 0
if maxrows > 0 then
  -- Read the rows the changes touch at once, not one HGET a change.
  local keys, seen, count = {}, {}, {}
  for i = 5, #ARGV, S do
    local op, tbl = ARGV[i+7], ARGV[i+8]
    if op ~= '' and op ~= 'c' then
      local ks, sn = keys[tbl], seen[tbl]
      if not ks then ks, sn = {}, {}; keys[tbl] = ks; seen[tbl] = sn; count[tbl] = 0 end
      local n, k = count[tbl], ARGV[i+9]
      if not sn[k] and n < 1000 then sn[k] = true; n = n + 1; ks[n] = k end
      k = ARGV[i+10]
      if k ~= '' and not sn[k] and n < 1000 then sn[k] = true; n = n + 1; ks[n] = k end
      count[tbl] = n
    end
  end
  prefetch(KEYS[4], keys)
end
for i = 5, #ARGV, S do
  local id, dash = ARGV[i], ARGV[i+4]
  -- Trimmed once, after the loop.
  local r
  if dash ~= '' then
    -- A dashboard also carries its type and key as fields of their own,
    -- which tools tell dashboards apart by (see redis_entry.go).
    r = redis.pcall('XADD', KEYS[1], id, F.header, ARGV[i+1], F.json, ARGV[i+2], F.admin, '1', F.type, ARGV[i+6], F.dashboard, dash)
  elseif ARGV[i+3] ~= '' then
    r = redis.pcall('XADD', KEYS[1], id, F.header, ARGV[i+1], F.json, ARGV[i+2], F.admin, '1', F.leftjson, ARGV[i+3])
  else
    r = redis.pcall('XADD', KEYS[1], id, F.header, ARGV[i+1], F.json, ARGV[i+2], F.admin, '1')
  end
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then flushBytes(); return r end
  else
    stored = stored + 1
    if maxlen > 0 and dash ~= '' then
      redis.call('RPUSH', KEYS[3], id)
      dashes = math.min(dashes + 1, 4 * maxlen)
    end
    if maxrows > 0 then
      keep(KEYS[4], floor, maxrows, ARGV[4], id, ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10],
        ARGV[i+11], ARGV[i+12])
    end
  end
  if dash ~= '' then redis.call('HSET', KEYS[2], dash, ARGV[i+5]) end
end
-- Every entry of this call is in the stream now (stored, or stored
-- before): the stream reaches its last id. Entries re-read from WAL are
-- older than the top, which stays.
if #ARGV >= 5 and (not top or older(top, ARGV[#ARGV - S + 1])) then redis.call('SET', KEYS[5], ARGV[#ARGV - S + 1]) end
if maxlen > 0 and stored > 0 then redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', maxlen + dashes) end
if maxlen > 0 then
  -- Forget the dashboards trimmed away.
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  local oldest = redis.call('LINDEX', KEYS[3], 0)
  if #first == 0 then
    redis.call('DEL', KEYS[3])
  elseif oldest and older(oldest, first[1][1]) then
    local n = 0
    local ids = redis.call('LRANGE', KEYS[3], 0, 999)
    while n < #ids and older(ids[n+1], first[1][1]) do n = n + 1 end
    if n > 0 then redis.call('LTRIM', KEYS[3], n, -1) end
  end
end
flushBytes()
local out = {stored}
for _, t in ipairs(turnedOff) do out[#out+1] = t end
return out
`

// luaFields declares, for a Lua script, the stream entry's field names
// as the table F (from the constants Go reads entries with), the header's
// version as HV and the arguments per message as S.
func luaFields() string {
	return fmt.Sprintf("local F = {header = %q, json = %q, leftjson = %q, type = %q, committee = %q, owner = %q, admin = %q, dashboard = %q, "+
		"rowop = %q, rowtable = %q, rowkey = %q, rowold = %q, rowunch = %q}\nlocal HV, S = %q, %d\n",
		fieldHeader, fieldJSON, fieldLeftJSON, fieldType, fieldCommittee, fieldOwner, fieldAdminOnly, fieldDashboard,
		fieldRowOp, fieldRowTable, fieldRowKey, fieldRowOldKey, fieldRowUnchanged, headerVersion, entryStride)
}

// appendChunk is how many messages one script call carries: large enough
// to share fsyncs, small enough to keep Redis responsive to readers.
const appendChunk = 256

// Append stores msgs: one pipelined round trip of script calls.
func (b *RedisBus) Append(ctx context.Context, msgs []schema.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// In a cluster, the node that owns the keys' slot: the WAIT after the
	// appends must run on their connection (see primary). Should the slot
	// have moved, the error has the client reload its slot map for the
	// retry (see slotReloader).
	node, err := b.primary(ctx)
	if err != nil {
		return b.note(err)
	}
	err = b.appendOnce(ctx, node, msgs)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if lerr := appendScript.Load(ctx, node).Err(); lerr != nil {
			return b.note(fmt.Errorf("load append script: %w", lerr))
		}
		err = b.appendOnce(ctx, node, msgs)
	}
	if redis.HasErrorPrefix(err, lostPrefix) {
		err = b.recoverLoss(ctx, node, err, msgs)
	}
	if err == nil {
		b.storedUpTo(msgs[len(msgs)-1].Pos)
	}
	return b.note(err)
}

func (b *RedisBus) appendOnce(ctx context.Context, node redis.UniversalClient, msgs []schema.Message) error {
	keys := []string{b.key, b.dashboardKey(), b.dashboardIDsKey(), b.stateKey(), b.topKey()}
	pipe := node.Pipeline()
	var cmds []*redis.Cmd
	for start := 0; start < len(msgs); start += appendChunk {
		chunk := msgs[start:min(start+appendChunk, len(msgs))]
		a := newEntryArgs(len(chunk), b.history, b.storedFloor(), b.stateMax, stateOffReason(b.stateMax))
		defer a.release() // once the pipeline was sent
		for i := range chunk {
			a.message(&chunk[i])
		}
		cmds = append(cmds, appendScript.EvalSha(ctx, pipe, keys, a.resolve()...))
	}
	// One WAIT per batch, in the same round trip.
	wait := b.waitReplicas(ctx, pipe)
	_, err := pipe.Exec(ctx)
	if err == nil {
		b.noteStateOff(cmds)
		return b.replicasAcked(ctx, wait)
	}
	for i, c := range cmds {
		if e := c.Err(); e != nil {
			if redis.HasErrorPrefix(e, "WRONGTYPE") {
				return &BusError{Problem: fmt.Sprintf("redis key %s holds another type, not a stream", b.key), Fix: fmt.Sprintf("DEL %s", b.key)}
			}
			return fmt.Errorf("append from %s to %s: %w", msgs[i*appendChunk].Pos, b.key, e)
		}
	}
	// The pipeline failed as a whole (a timeout, a lost connection) without
	// marking its commands: nothing is known to be stored.
	return fmt.Errorf("append from %s to %s: %w", msgs[0].Pos, b.key, err)
}

// topKey holds the id of the newest entry the append script knows the
// stream holds (see appendScript).
func (b *RedisBus) topKey() string { return b.key + ":top" }

// dashboardIDsKey is the list of the dashboard entries' ids in the
// stream, oldest first: what keeps them out of the history budget (see
// appendScript).
func (b *RedisBus) dashboardIDsKey() string { return b.key + ":dashids" }
