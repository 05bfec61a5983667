package broadcast

import (
	"context"
	"fmt"
	"strconv"
	"strings"

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
// KEYS: stream, dashboards hash. ARGV[1]: MAXLEN (0: no trim); then per
// message: id, json, type, committee, owner, admin-only, dashboard key,
// dashboard record ("" for absent fields).
var appendScript = redis.NewScript(`
local maxlen = tonumber(ARGV[1])
local stored = 0
for i = 2, #ARGV, 8 do
  local f = {'m', ARGV[i+1], 't', ARGV[i+2]}
  if ARGV[i+3] ~= '' then f[#f+1] = 'c'; f[#f+1] = ARGV[i+3] end
  if ARGV[i+4] ~= '' then f[#f+1] = 'u'; f[#f+1] = ARGV[i+4] end
  if ARGV[i+5] ~= '' then f[#f+1] = 'a'; f[#f+1] = ARGV[i+5] end
  if ARGV[i+6] ~= '' then f[#f+1] = 'k'; f[#f+1] = ARGV[i+6] end
  local r
  if maxlen > 0 then
    r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', maxlen, ARGV[i], unpack(f))
  else
    r = redis.pcall('XADD', KEYS[1], ARGV[i], unpack(f))
  end
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then return r end
  else
    stored = stored + 1
  end
  if ARGV[i+6] ~= '' then redis.call('HSET', KEYS[2], ARGV[i+6], ARGV[i+7]) end
end
return stored
`)

// appendChunk is how many messages one script call carries: large enough
// to share fsyncs, small enough to keep Redis responsive to readers.
const appendChunk = 256

// Append stores msgs: one pipelined round trip of script calls.
func (b *RedisBus) Append(ctx context.Context, msgs []schema.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	err := b.appendOnce(ctx, msgs)
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		if lerr := appendScript.Load(ctx, b.rdb).Err(); lerr != nil {
			return b.note(fmt.Errorf("load append script: %w", lerr))
		}
		err = b.appendOnce(ctx, msgs)
	}
	return b.note(err)
}

func (b *RedisBus) appendOnce(ctx context.Context, msgs []schema.Message) error {
	keys := []string{b.key, b.dashboardKey()}
	pipe := b.rdb.Pipeline()
	var cmds []*redis.Cmd
	for start := 0; start < len(msgs); start += appendChunk {
		chunk := msgs[start:min(start+appendChunk, len(msgs))]
		args := make([]any, 0, 1+8*len(chunk))
		args = append(args, b.history)
		for i := range chunk {
			m := &chunk[i]
			committee, owner, admin, dash, record := "", "", "", "", ""
			if m.HasCommittee {
				committee = strconv.FormatInt(m.Committee, 10)
			}
			if m.HasOwner {
				owner = strconv.FormatInt(m.Owner, 10)
			}
			if m.AdminOnly {
				admin = "1"
			}
			if m.DashboardKey != "" {
				// The newest of each dashboard, for replicas that start
				// after it was appended (the stream may have trimmed it).
				dash, record = m.DashboardKey, encodeDashboard(m)
			}
			args = append(args, m.Pos.String(), m.JSON, m.Type, committee, owner, admin, dash, record)
		}
		cmds = append(cmds, appendScript.EvalSha(ctx, pipe, keys, args...))
	}
	if _, err := pipe.Exec(ctx); err == nil {
		return nil
	}
	for i, c := range cmds {
		if e := c.Err(); e != nil {
			if strings.Contains(e.Error(), "WRONGTYPE") {
				return &BusError{Problem: fmt.Sprintf("redis key %s holds another type, not a stream", b.key), Fix: fmt.Sprintf("DEL %s", b.key)}
			}
			return fmt.Errorf("append from %s to %s: %w", msgs[i*appendChunk].Pos, b.key, e)
		}
	}
	return nil
}
