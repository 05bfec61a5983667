package broadcast

// stateLua holds the Lua functions the append script and the state's
// staging scripts share: the version order of ids, the JSON scanning that
// merges unchanged columns (as schema.MergeUnchanged does in Go), and
// keep, which applies one change to a state by the rules stateSet.apply
// applies in process.
//
// A state lives in a hash (meta) and one hash of rows per table (meta ..
// ':rows:' .. table, field: the key, value: the row record, see
// decodeStateRecord). meta holds 'floor', 'ready', and per table 'tbl:<t>' (the
// table holds state; its message type, ” before the first row),
// 'off:<t>' (why it holds none) and 'bytes:<t>'. Only tables that
// LoadState registered hold state.
//
// keep takes a change as its arguments (not a table: it runs once per
// appended change): id, typ, op ('u' upsert, 'U' upsert of an oversized
// row, 'd' delete, 'c' clear), tbl, key, old (the key before an update
// that changed it), unch (unchanged columns, as JSON strings separated by
// newlines), rec (an upsert's row record, as decodeStateRecord reads it,
// made by the writer: the script only stores it).
const stateLua = `
local function older(a, b)
  local al, as = string.match(a, '^(%d+)-(%d+)$')
  local bl, bs = string.match(b, '^(%d+)-(%d+)$')
  if not al or not bl then return false end
  if al ~= bl then
    if #al ~= #bl then return #al < #bl end
    return al < bl
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local function skipv(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then
    local j = i + 1
    while true do
      local q = string.find(s, '["\\]', j)
      if not q then return #s + 1 end
      if string.sub(s, q, q) == '\\' then j = q + 2 else return q + 1 end
    end
  elseif c == '{' or c == '[' then
    local depth, j = 0, i
    while true do
      local q = string.find(s, '[%[%]{}"]', j)
      if not q then return #s + 1 end
      local d = string.sub(s, q, q)
      if d == '"' then
        j = skipv(s, q)
      else
        if d == '{' or d == '[' then depth = depth + 1 else depth = depth - 1 end
        j = q + 1
        if depth == 0 then return j end
      end
    end
  end
  return string.find(s, '[,}%]]', i) or #s + 1
end
local function member(s, name)
  if string.sub(s, 1, 1) ~= '{' or string.sub(s, 2, 2) == '}' then return nil end
  local i = 2
  while i <= #s do
    local ke = skipv(s, i)
    local ve = skipv(s, ke + 1)
    if string.sub(s, i, ke - 1) == name then return ke + 1, ve end
    if string.sub(s, ve, ve) ~= ',' then return nil end
    i = ve + 1
  end
  return nil
end
local function mergeflat(prev, nxt, names)
  local out = string.sub(nxt, 1, -2)
  for _, n in ipairs(names) do
    if not member(nxt, n) then
      local s, e = member(prev, n)
      if s then
        if #out > 1 then out = out .. ',' end
        out = out .. n .. ':' .. string.sub(prev, s, e - 1)
      end
    end
  end
  return out .. '}'
end
local function merge(prev, nxt, unch)
  local names = {}
  for n in string.gmatch(unch, '[^\n]+') do names[#names+1] = n end
  if #names == 0 or string.sub(nxt, 1, 1) ~= '{' then return nxt end
  for _, w in ipairs({'"vote_count"', '"election_results"'}) do
    local ns, ne = member(nxt, w)
    if ns and string.sub(nxt, ns, ns) == '{' then
      local ps, pe = member(prev, w)
      if not ps then return nxt end
      local inner = mergeflat(string.sub(prev, ps, pe - 1), string.sub(nxt, ns, ne - 1), names)
      return string.sub(nxt, 1, ns - 1) .. inner .. string.sub(nxt, ne)
    end
  end
  return mergeflat(prev, nxt, names)
end
local cache, turnedOff, deltas = {}, {}, {}
-- stateTable returns what keep needs of a table of the state under meta
-- (false when it holds no state), read once per script call: its type,
-- its rows' key, the bytes its rows gained in this call, and the row
-- writes not yet sent (pend: key to record, false for a delete), all
-- written by flushBytes. Buffering the writes makes a batch of rows one
-- HSET instead of a command per row; n counts the rows (HLEN, read once
-- when the limit first needs it).
local function stateTable(meta, tbl)
  local bymeta = cache[meta]
  if not bymeta then
    bymeta = {}
    cache[meta] = bymeta
  end
  local t = bymeta[tbl]
  if t == nil then
    local v = redis.call('HMGET', meta, 'tbl:' .. tbl, 'off:' .. tbl)
    if v[1] == false or v[2] ~= false then
      t = false
    else
      t = {typ = v[1], rows = meta .. ':rows:' .. tbl, meta = meta, tbl = tbl, delta = 0, pend = {}, npend = 0, known = {}}
      deltas[#deltas+1] = t
    end
    bymeta[tbl] = t
  end
  return t
end
-- rowGet returns the record of key in t (false when none): written in
-- this call, read ahead by prefetch, or stored.
local function rowGet(t, key)
  local v = t.pend[key]
  if v ~= nil then return v end
  v = t.known[key]
  if v ~= nil then return v end
  if t.cleared then return false end
  return redis.call('HGET', t.rows, key)
end
-- prefetch reads the stored records of keys (by table, under meta) in one
-- HMGET per table, for the rowGet calls to come.
local function prefetch(meta, keys)
  for tbl, ks in pairs(keys) do
    local t = stateTable(meta, tbl)
    if t and #ks > 0 then
      local vs = redis.call('HMGET', t.rows, unpack(ks))
      for j, k in ipairs(ks) do t.known[k] = vs[j] end
    end
  end
end
-- rowPut buffers the record of key in t (false: delete it).
local function rowPut(t, key, rec)
  if t.pend[key] == nil then t.npend = t.npend + 1 end
  t.pend[key] = rec
end
-- rowsFlush sends t's buffered row writes, a few hundred rows a command.
local function rowsFlush(t)
  if t.npend == 0 then return end
  -- Counted, not #: Lua's length of a table is a search, once per row.
  local set, del, ns, nd = {}, {}, 0, 0
  for k, v in pairs(t.pend) do
    t.known[k] = v
    if v then
      set[ns+1] = k; set[ns+2] = v; ns = ns + 2
      if ns >= 512 then redis.call('HSET', t.rows, unpack(set, 1, ns)); ns = 0 end
    else
      nd = nd + 1; del[nd] = k
      if nd >= 512 then redis.call('HDEL', t.rows, unpack(del, 1, nd)); nd = 0 end
    end
  end
  if ns > 0 then redis.call('HSET', t.rows, unpack(set, 1, ns)) end
  if nd > 0 then redis.call('HDEL', t.rows, unpack(del, 1, nd)) end
  t.pend, t.npend = {}, 0
end
local function version(rec) return string.match(rec, '^[^\n]*') end
local pastFloor = {}
local function keep(meta, floor, maxrows, reason, id, typ, op, tbl, key, old, unch, rec)
  if op == '' then return end
  local t = stateTable(meta, tbl)
  if not t then return end
  -- Ids increase through a call: once one is past the floor, all are.
  if floor ~= '' and not pastFloor[meta] then
    if not older(floor, id) then return end
    pastFloor[meta] = true
  end
  local rows = t.rows
  if op == 'c' then
    redis.call('DEL', rows)
    redis.call('HSET', meta, 'bytes:' .. tbl, 0)
    t.delta, t.pend, t.npend, t.n, t.known, t.cleared = 0, {}, 0, 0, {}, true
    return
  end
  local prev = rowGet(t, key)
  if prev and not older(version(prev), id) then return end
  local delta = 0
  if op == 'd' then
    if prev then
      rowPut(t, key, false)
      delta = -(#key + #prev)
      if t.n then t.n = t.n - 1 end
    end
  else
    if prev and unch ~= '' then
      local head, data = string.match(rec, '^([^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n)(.*)$')
      rec = head .. merge(string.match(prev, '^[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*\n(.*)$'), data, unch)
    end
    rowPut(t, key, rec)
    delta = #key + #rec
    if prev then delta = delta - #key - #prev end
    if t.typ ~= typ then
      redis.call('HSET', meta, 'tbl:' .. tbl, typ)
      t.typ = typ
    end
    if not prev and t.n then t.n = t.n + 1 end
    if old ~= '' and old ~= key then
      local o = rowGet(t, old)
      if o and older(version(o), id) then
        rowPut(t, old, false)
        delta = delta - #old - #o
        if t.n then t.n = t.n - 1 end
      end
    end
    if not prev and maxrows > 0 then
      if not t.n then
        rowsFlush(t)
        t.n = redis.call('HLEN', rows)
      end
      if t.n > maxrows then
        redis.call('DEL', rows)
        redis.call('HSET', meta, 'off:' .. tbl, reason, 'bytes:' .. tbl, 0)
        cache[meta][tbl] = false
        t.delta, t.pend, t.npend = 0, {}, 0
        turnedOff[#turnedOff+1] = tbl
        return
      end
    end
  end
  t.delta = t.delta + delta
end
-- flushBytes sends the row writes keep buffered and adds up the byte
-- counts it changed; call it before the script returns.
local function flushBytes()
  for _, t in ipairs(deltas) do
    rowsFlush(t)
    if t.delta ~= 0 then redis.call('HINCRBY', t.meta, 'bytes:' .. t.tbl, t.delta) end
    t.delta = 0
  end
end
-- headerChange reads the header of a stream entry (see redis_entry.go):
-- lines of version, type, committee, owner, flags, dashboard, left
-- scope, row op, key, old key, table, then the unchanged columns. A
-- header of another version, or damaged, changes no row.
local function headerChange(h)
  local l = {}
  for line in string.gmatch(h .. '\n', '([^\n]*)\n') do l[#l+1] = line end
  local m = {typ = l[2] or '', c = l[3] or '', u = l[4] or '', a = '', op = '', tbl = '', key = '', old = '', unch = ''}
  if l[1] ~= HV or #l < 11 then return m end
  -- Fail closed: any flag makes the row admin-only, as in Go.
  if l[5] ~= '' then m.a = '1' end
  m.op, m.key, m.old, m.tbl = l[8], l[9], l[10], l[11]
  if string.sub(m.tbl, 1, 1) == '"' then
    local ok, t = pcall(cjson.decode, m.tbl)
    if not ok or type(t) ~= 'string' then m.op = '' else m.tbl = t end
  end
  m.unch = table.concat(l, '\n', 12)
  return m
end
-- entryChange reads a change from a stream entry (XRANGE's field list),
-- in either format: a header, or the separate fields of the entries
-- walcast wrote before it had one.
local function entryChange(e)
  local f = {}
  for k = 1, #e[2], 2 do f[e[2][k]] = e[2][k+1] end
  local m
  if f[F.header] then
    m = headerChange(f[F.header])
  else
    -- Any admin flag but none makes the row admin-only, as in Go.
    local a = ''
    if (f[F.admin] or '') ~= '' then a = '1' end
    m = {typ = f[F.type] or '', c = f[F.committee] or '', u = f[F.owner] or '',
      a = a, op = f[F.rowop] or '', tbl = f[F.rowtable] or '', key = f[F.rowkey] or '',
      old = f[F.rowold] or '', unch = f[F.rowunch] or ''}
  end
  m.id, m.rec = e[1], ''
  if m.op == 'u' or m.op == 'U' then
    local s, e2 = member(f[F.json] or '', '"data"')
    local flags = m.a
    if m.op == 'U' then flags = flags .. 'o' end
    if not s then m.op = '' else m.rec = m.id .. '\n' .. m.c .. '\n' .. m.u .. '\n' .. flags .. '\n' .. string.sub(f[F.json], s, e2 - 1) end
  end
  return m
end
`
