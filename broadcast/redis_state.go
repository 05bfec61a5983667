package broadcast

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/schema"
)

// Stream entry fields of a change to the live state (see appendScript):
// what LoadState applies when it replays the stream in Redis.
const (
	fieldRowOp        = "o" // u, d or c (see rowOpCode)
	fieldRowTable     = "r"
	fieldRowKey       = "y"
	fieldRowOldKey    = "x"
	fieldRowUnchanged = "n" // JSON strings, one a line
)

// stateKey is the live state's meta hash; its rows are in
// rowsKey(stateKey(), table) (see stateLua).
func (b *RedisBus) stateKey() string { return b.key + ":state" }

// newStageKey returns the staging meta hash of one LoadState, laid out
// as stateKey: each load stages apart, so that two at once (a rebuild
// while capture seeds) cannot mix their rows; the last to swap wins.
// Staging keys expire (stageTTL) unless the swap makes them live.
func (b *RedisBus) newStageKey() string {
	id := make([]byte, 8)
	rand.Read(id)
	return b.key + ":state:stage:" + hex.EncodeToString(id)
}

// stageTTL is how long the keys of an abandoned LoadState (its process
// died) stay in Redis; every staging call renews it.
const stageTTL = time.Hour

func rowsKey(meta, table string) string { return meta + ":rows:" + table }

// rowOpCode is how the scripts name what r does: "U" is an upsert of an
// oversized row (see stateLua).
func rowOpCode(r *schema.RowRef) string {
	switch r.Op {
	case schema.RowUpsert:
		if r.Oversized {
			return "U"
		}
		return "u"
	case schema.RowDelete:
		return "d"
	case schema.RowClear:
		return "c"
	}
	return ""
}

// luaNames encodes column names for the scripts: JSON strings, as they
// appear as keys in data, one a line.
func luaNames(names []string) string {
	var b []byte
	for i, n := range names {
		if i > 0 {
			b = append(b, '\n')
		}
		b = jsonx.AppendString(b, n)
	}
	return string(b)
}

// noteStateOff logs the tables the append scripts turned off (the limit
// was exceeded), with the fix.
func (b *RedisBus) noteStateOff(cmds []*redis.Cmd) {
	for _, c := range cmds {
		res, _ := c.Slice()
		for _, t := range res[min(1, len(res)):] {
			b.log.Error("live state turned off for a table: it holds more rows than --state-max-rows; sync reports it unavailable. Raise --state-max-rows, then run walcast state rebuild",
				"table", t, "state_max_rows", b.stateMax)
		}
	}
}

// stageScript applies changes to the staging state: the snapshot's rows
// (ARGV as the append script's; they are at the floor, not after it) or, with ARGV[4]
// 'replay', the stream's entries after ARGV[5], at most ARGV[6] of them;
// 'swap' applies every entry after ARGV[5] and then moves the staged
// tables (ARGV[7...]) into the live state, with ARGV[6] as its floor, in
// one step: no append can come between.
//
// KEYS: stream, state meta, staging meta. ARGV[1]: the staging keys'
// expiry in seconds, ARGV[2]:
// --state-max-rows, ARGV[3]: the reason a table over it is off.
var stageScript = redis.NewScript(luaFields() + stateLua + `
local maxrows = tonumber(ARGV[2])
-- expireStaged renews the expiry of the staging keys this call wrote.
local function expireStaged()
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  for _, t in ipairs(deltas) do redis.call('EXPIRE', t.rows, ARGV[1]) end
end
local floor = redis.call('HGET', KEYS[3], 'floor') or ''
if ARGV[4] ~= 'replay' and ARGV[4] ~= 'swap' then
  -- The snapshot's rows are at the floor.
  for i = 4, #ARGV, S do
    keep(KEYS[3], '', maxrows, ARGV[3], ARGV[i], ARGV[i+6], ARGV[i+7], ARGV[i+8], ARGV[i+9], ARGV[i+10],
      ARGV[i+11], ARGV[i+12])
  end
  flushBytes()
  expireStaged()
  return {'', turnedOff}
end
local cursor = ARGV[5]
local count = {}
if ARGV[4] == 'replay' then count = {'COUNT', tonumber(ARGV[6])} end
local es = redis.call('XRANGE', KEYS[1], '(' .. cursor, '+', unpack(count))
for _, e in ipairs(es) do
  local m = entryChange(e)
  keep(KEYS[3], floor, maxrows, ARGV[3], m.id, m.typ, m.op, m.tbl, m.key, m.old, m.unch, m.rec)
  cursor = e[1]
end
flushBytes()
if ARGV[4] == 'replay' then
  expireStaged()
  return {cursor, turnedOff, #es}
end
for i = 7, #ARGV do
  local t = ARGV[i]
  local live, staged = KEYS[2] .. ':rows:' .. t, KEYS[3] .. ':rows:' .. t
  local v = redis.call('HMGET', KEYS[3], 'tbl:' .. t, 'off:' .. t, 'bytes:' .. t)
  redis.call('DEL', live)
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, live)
    redis.call('PERSIST', live)
  end
  redis.call('HSET', KEYS[2], 'tbl:' .. t, v[1] or '', 'bytes:' .. t, v[3] or 0)
  if v[2] then redis.call('HSET', KEYS[2], 'off:' .. t, v[2]) else redis.call('HDEL', KEYS[2], 'off:' .. t) end
end
redis.call('HSET', KEYS[2], 'ready', '1', 'floor', ARGV[6])
redis.call('DEL', KEYS[3])
return {cursor, turnedOff}
`)

// runStage runs stageScript on the staging meta hash stage, loading the
// script when Redis lost it.
func (b *RedisBus) runStage(ctx context.Context, stage string, args []any) ([]any, error) {
	keys := []string{b.key, b.stateKey(), stage}
	args = append([]any{int64(stageTTL / time.Second), b.stateMax, stateOffReason(b.stateMax)}, args...)
	res, err := stageScript.Run(ctx, b.rdb, keys, args...).Slice()
	if b.note(err) != nil {
		return nil, fmt.Errorf("stage the live state: %w", err)
	}
	return res, nil
}

// LoadState implements StateStore (see loadState).
func (b *RedisBus) LoadState(ctx context.Context, at schema.Position, tables []string,
	rows func(yield func(batch []schema.Message) error) error) error {
	if b.stateMax == 0 {
		return errors.New("load state: live state is disabled (--state-max-rows 0)")
	}
	s := redisStager{b: b, meta: b.newStageKey()}
	if err := loadState(ctx, s, at, tables, rows); err != nil {
		s.discard(tables)
		return err
	}
	logLoadedOff(ctx, b, b.log, tables)
	return nil
}

// redisStager stages a LoadState in Redis, next to the live state, in
// the keys of its own staging meta hash.
type redisStager struct {
	b    *RedisBus
	meta string // the staging meta hash
}

func (s redisStager) stageBegin(ctx context.Context, at schema.Position, tables []string) error {
	b := s.b
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fields := []any{"floor", at.String()}
		for _, t := range tables {
			fields = append(fields, "tbl:"+t, "")
		}
		p.HSet(ctx, s.meta, fields...)
		p.Expire(ctx, s.meta, stageTTL)
		return nil
	})
	if b.note(err) != nil {
		return fmt.Errorf("prepare the staging keys: %w", err)
	}
	return s.checkGap(ctx, at)
}

func (s redisStager) stage(ctx context.Context, msgs []*schema.Message) error {
	for start := 0; start < len(msgs); start += appendChunk {
		chunk := msgs[start:min(start+appendChunk, len(msgs))]
		a := newEntryArgs(len(chunk))
		for _, m := range chunk {
			a.message(m)
		}
		_, err := s.b.runStage(ctx, s.meta, a.resolve())
		a.release()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s redisStager) replay(ctx context.Context, cursor schema.Position, limit int) (schema.Position, int, error) {
	if err := s.checkGap(ctx, cursor); err != nil {
		return cursor, 0, err
	}
	res, err := s.b.runStage(ctx, s.meta, []any{"replay", cursor.String(), limit})
	if err != nil {
		return cursor, 0, err
	}
	next, err := schema.ParsePosition(fmt.Sprint(res[0]))
	if err != nil {
		return cursor, 0, fmt.Errorf("replay the stream: %w", err)
	}
	n, _ := res[2].(int64)
	return next, int(n), nil
}

func (s redisStager) swap(ctx context.Context, cursor, at schema.Position, tables []string) error {
	if err := s.checkGap(ctx, cursor); err != nil {
		return err
	}
	args := []any{"swap", cursor.String(), at.String()}
	for _, t := range tables {
		args = append(args, t)
	}
	_, err := s.b.runStage(ctx, s.meta, args)
	return err
}

// discard deletes the staging keys of a LoadState that failed.
func (s redisStager) discard(tables []string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.b.timeout)
	defer cancel()
	keys := []string{s.meta}
	for _, t := range tables {
		keys = append(keys, rowsKey(s.meta, t))
	}
	s.b.rdb.Del(ctx, keys...) // best effort: they expire anyway
}

// checkGap returns ErrStateGap when the stream may lack a change after
// pos. Unlike a client's resume position, pos need not be an entry of
// the stream (a snapshot's position rarely is): only entries removed
// after it count, and, once the stream was trimmed, a pos before its
// first entry, since what was trimmed may have followed pos.
func (s redisStager) checkGap(ctx context.Context, pos schema.Position) error {
	info, err := s.b.rdb.XInfoStream(ctx, s.b.key).Result()
	if isNoSuchKey(err) {
		return s.b.note(nil)
	}
	if s.b.note(err) != nil {
		return fmt.Errorf("read %s: %w", s.b.key, err)
	}
	if deleted, err := schema.ParsePosition(info.MaxDeletedEntryID); err == nil && pos.Less(deleted) {
		return fmt.Errorf("changes up to %s were deleted from %s: %w", deleted, s.b.key, ErrStateGap)
	}
	if info.EntriesAdded == info.Length || info.Length == 0 {
		return nil
	}
	if first, err := schema.ParsePosition(info.FirstEntry.ID); err == nil && pos.Less(first) {
		return fmt.Errorf("%s was trimmed up to %s: %w", s.b.key, first, ErrStateGap)
	}
	return nil
}

// StateInfo implements StateStore.
func (b *RedisBus) StateInfo(ctx context.Context) (StateStatus, error) {
	meta, err := b.rdb.HGetAll(ctx, b.stateKey()).Result()
	if b.note(err) != nil {
		return StateStatus{}, fmt.Errorf("read %s: %w", b.stateKey(), err)
	}
	st := StateStatus{Ready: meta["ready"] == "1", Tables: map[string]TableState{}}
	if f, ok := meta["floor"]; ok {
		if st.Floor, err = schema.ParsePosition(f); err != nil {
			return StateStatus{}, fmt.Errorf("read %s: floor: %w", b.stateKey(), err)
		}
	}
	var names []string
	for field, v := range meta {
		if t, ok := strings.CutPrefix(field, "tbl:"); ok {
			names = append(names, t)
			st.Tables[t] = TableState{Type: v}
		}
	}
	pipe := b.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(names))
	for i, t := range names {
		lens[i] = pipe.HLen(ctx, rowsKey(b.stateKey(), t))
	}
	if _, err := pipe.Exec(ctx); len(names) > 0 && b.note(err) != nil {
		return StateStatus{}, fmt.Errorf("count the rows of the live state: %w", err)
	}
	for i, t := range names {
		ts := st.Tables[t]
		ts.Rows = lens[i].Val()
		ts.Bytes, _ = strconv.ParseInt(meta["bytes:"+t], 10, 64)
		ts.Reason, ts.Off = meta["off:"+t]
		st.Tables[t] = ts
	}
	return st, nil
}

// ReadState implements StateStore. The head is read first: every change
// up to it is in the rows, which the append script keeps with the stream.
func (b *RedisBus) ReadState(ctx context.Context, tables []string, n int,
	fn func(batch []StateRow) error) (schema.Position, error) {
	head, err := b.Head(ctx)
	if err != nil {
		return schema.Position{}, fmt.Errorf("read state: %w", err)
	}
	if len(tables) == 0 {
		st, err := b.StateInfo(ctx)
		if err != nil {
			return schema.Position{}, err
		}
		tables = st.tableNames()
	}
	if len(tables) == 0 {
		return head, nil
	}
	types, err := b.rdb.HMGet(ctx, b.stateKey(), prefixed("tbl:", tables)...).Result()
	if b.note(err) != nil {
		return schema.Position{}, fmt.Errorf("read %s: %w", b.stateKey(), err)
	}
	for i, t := range tables {
		typ, _ := types[i].(string)
		if err := b.scanRows(ctx, t, typ, max(n, 1), fn); err != nil {
			return schema.Position{}, err
		}
	}
	return head, nil
}

// scanRows streams the rows of table in batches of at most n.
func (b *RedisBus) scanRows(ctx context.Context, table, typ string, n int, fn func(batch []StateRow) error) error {
	key := rowsKey(b.stateKey(), table)
	var cursor uint64
	batch := make([]StateRow, 0, n)
	for {
		kv, next, err := b.rdb.HScan(ctx, key, cursor, "", int64(n)).Result()
		if b.note(err) != nil {
			return fmt.Errorf("read the rows of %s: %w", table, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			row, err := decodeStateRecord(table, typ, kv[i], kv[i+1])
			if err != nil {
				return err
			}
			batch = append(batch, row)
			if len(batch) == n {
				if err := fn(batch); err != nil {
					return err
				}
				batch = make([]StateRow, 0, n)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(batch) > 0 {
		return fn(batch)
	}
	return nil
}

// decodeStateRecord reads a row record the scripts wrote: version,
// committee, owner, flags ("1" admin-only, "o" oversized) and data, one a
// line.
func decodeStateRecord(table, typ, key, rec string) (StateRow, error) {
	parts := strings.SplitN(rec, "\n", 5)
	row := StateRow{Table: table, Key: key, Type: typ}
	var err error
	if len(parts) == 5 {
		row.Version, err = schema.ParsePosition(parts[0])
	}
	if len(parts) != 5 || err != nil {
		return StateRow{}, fmt.Errorf("read the live state of %s: row %s is damaged; run walcast state rebuild", table, key)
	}
	// Scope fails closed, as for stream entries (see entryID).
	var badC, badO bool
	row.Committee, row.HasCommittee, badC = entryID(parts[1])
	row.Owner, row.HasOwner, badO = entryID(parts[2])
	// Any flag but "o" reads as admin-only: fail closed.
	row.Oversized = strings.Contains(parts[3], "o")
	row.AdminOnly = strings.Trim(parts[3], "o") != "" || badC || badO
	row.Data = []byte(parts[4])
	return row, nil
}

// prefixed returns each name with prefix, as HMGET's fields.
func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// dropState deletes the live state (a new epoch: the state belongs to
// the old database). A load staging meanwhile would bring back the old
// database's rows: capture starts an epoch before it streams, and seeds
// after.
func (b *RedisBus) dropState(ctx context.Context) error {
	meta := b.stateKey()
	fields, err := b.rdb.HKeys(ctx, meta).Result()
	if b.note(err) != nil {
		return fmt.Errorf("read %s: %w", meta, err)
	}
	keys := []string{meta}
	for _, f := range fields {
		if t, ok := strings.CutPrefix(f, "tbl:"); ok {
			keys = append(keys, rowsKey(meta, t))
		}
	}
	if err := b.rdb.Del(ctx, keys...).Err(); b.note(err) != nil {
		return fmt.Errorf("delete the live state: %w", err)
	}
	return nil
}
