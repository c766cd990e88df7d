package catalog

// The scripts' shared functions. A record is a MessagePack array (see
// pack.go and record.go for the positions), read and written by up and pk
// here in plain Lua rather than with cmsgpack, which not every
// Redis-protocol server has (the in-process one of make run has not).
// Scripts only ever change its state (t[1]) and the decision fields
// (t[16] to t[20]); pk writes the narrowest forms and fills the holes
// below the last field with false, as Go's encoder does, so a record
// written by a script and one written by Go for the same decision are
// equal byte for byte.

// recLua defines up(s) and pk(t), the record's decoding and encoding; level(n), the call
// index level of the n-th call entry; callOf(t), a record's call id (” for
// messages); held(holdsKey, user, call), the id of the first legal hold of
// the domain that covers an artifact of user in call (a hold covers an
// artifact when every name it gives matches; a domain hold covers
// everything), or nil.
const recLua = `
local function be(n, k)
  local out = {}
  for i = k, 1, -1 do
    out[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(out)
end
local function encInt(n)
  if n >= 0 then
    if n < 128 then return string.char(n) end
    if n < 256 then return '\204' .. string.char(n) end
    if n < 65536 then return '\205' .. be(n, 2) end
    if n < 4294967296 then return '\206' .. be(n, 4) end
    local hi = math.floor(n / 4294967296)
    return '\207' .. be(hi, 4) .. be(n - hi * 4294967296, 4)
  end
  if n >= -32 then return string.char(n + 256) end
  if n >= -128 then return '\208' .. string.char(n + 256) end
  if n >= -32768 then return '\209' .. be(n + 65536, 2) end
  if n >= -2147483648 then return '\210' .. be(n + 4294967296, 4) end
  local hi = math.floor(n / 4294967296)
  return '\211' .. be(hi + 4294967296, 4) .. be(n - hi * 4294967296, 4)
end
local function encStr(v)
  local n = #v
  if n < 32 then return string.char(160 + n) .. v end
  if n < 256 then return '\217' .. string.char(n) .. v end
  if n < 65536 then return '\218' .. be(n, 2) .. v end
  return '\219' .. be(n, 4) .. v
end
local function pk(t)
  local top = 0
  for i = 1, 20 do if t[i] ~= nil then top = i end end
  local out = {}
  if top < 16 then out[1] = string.char(144 + top) else out[1] = '\220' .. be(top, 2) end
  for i = 1, top do
    local v = t[i]
    if v == nil or v == false then out[i + 1] = '\194'
    elseif type(v) == 'number' then out[i + 1] = encInt(v)
    else out[i + 1] = encStr(v) end
  end
  return table.concat(out)
end
local function uint(s, p, k)
  local n = 0
  for i = p, p + k - 1 do n = n * 256 + string.byte(s, i) end
  return n
end
local function up(s)
  local c = string.byte(s, 1)
  local n, p = c - 144, 2
  if c == 220 then n, p = uint(s, 2, 2), 4 end
  local t = {}
  for i = 1, n do
    c = string.byte(s, p)
    if c < 128 then t[i], p = c, p + 1
    elseif c >= 224 then t[i], p = c - 256, p + 1
    elseif c >= 160 and c < 192 then t[i], p = string.sub(s, p + 1, p + c - 160), p + 1 + c - 160
    elseif c == 192 or c == 194 then t[i], p = false, p + 1
    elseif c == 204 then t[i], p = uint(s, p + 1, 1), p + 2
    elseif c == 205 then t[i], p = uint(s, p + 1, 2), p + 3
    elseif c == 206 then t[i], p = uint(s, p + 1, 4), p + 5
    elseif c == 207 then t[i], p = uint(s, p + 1, 4) * 4294967296 + uint(s, p + 5, 4), p + 9
    elseif c == 208 then t[i], p = uint(s, p + 1, 1) - 256, p + 2
    elseif c == 209 then t[i], p = uint(s, p + 1, 2) - 65536, p + 3
    elseif c == 210 then t[i], p = uint(s, p + 1, 4) - 4294967296, p + 5
    elseif c == 211 then t[i], p = (uint(s, p + 1, 4) - 4294967296) * 4294967296 + uint(s, p + 5, 4), p + 9
    elseif c == 217 then
      local l = string.byte(s, p + 1)
      t[i], p = string.sub(s, p + 2, p + 1 + l), p + 2 + l
    elseif c == 218 then
      local l = uint(s, p + 1, 2)
      t[i], p = string.sub(s, p + 3, p + 2 + l), p + 3 + l
    elseif c == 219 then
      local l = uint(s, p + 1, 4)
      t[i], p = string.sub(s, p + 5, p + 4 + l), p + 5 + l
    else return error('catalog: malformed record') end
  end
  return t
end
local function level(n)
  local l = 0
  while n >= 512 do n = math.floor(n / 2); l = l + 1 end
  return l
end
local function callOf(t)
  if t[3] <= 2 then return t[7] end
  return ''
end
local function held(holdsKey, user, call)
  for _, raw in ipairs(redis.call('HVALS', holdsKey)) do
    local ok, h = pcall(cjson.decode, raw)
    if not ok then return 'unreadable-hold' end
    local hu, hc = h['user'], h['call_id']
    if type(hu) ~= 'string' then hu = '' end
    if type(hc) ~= 'string' then hc = '' end
    if (hu == '' or hu == user) and (hc == '' or hc == call) then
      local id = h['id']
      if type(id) ~= 'string' or id == '' then id = 'hold' end
      return id
    end
  end
  return nil
end
`

// indexLua defines index(...): writes an admitted record and its entries
// in the hour bitmap (and, for an hour's first record, the years bitmap),
// and counts a call entry in counter unless that is empty (a batch adds
// them up), the user index, the call index and a cap-tracking
// set; unindex(...): takes an admitted record out of them and out of the
// usage counters; markDeleted(t, ...): the deleted record. Usage, daily
// bytes and monthly counters are the callers' (a batch adds them up).
const indexLua = `
local function index(bucket, field, rec, bitmap, bit, uidx, uscore, callKey, ch, hour, counter, track, trackType, score, years, year)
  redis.call('HSET', bucket, field, rec)
  if redis.call('SETBIT', bitmap, bit, 1) == 0 then redis.call('SETBIT', years, year, 1) end
  if uscore ~= '' then redis.call('ZADD', uidx, uscore, field) end
  if ch ~= '' then
    if redis.call('HSETNX', callKey, ch, hour) == 0 then
      redis.call('HSET', callKey, ch, redis.call('HGET', callKey, ch) .. ',' .. hour)
    end
    if counter ~= '' then redis.call('INCR', counter) end
  end
  if trackType == 'set' then redis.call('ZADD', track, score, field) end
end
local function unindex(t, field, uidx, callKey, ch, hour, usage, track, trackType, category)
  local size = t[5]
  redis.call('ZREM', uidx, field)
  if ch ~= '' then
    local v = redis.call('HGET', callKey, ch)
    if v then
      local out, gone = {}, false
      for p in string.gmatch(v, '[^,]+') do
        if not gone and p == hour then gone = true else out[#out + 1] = p end
      end
      if #out == 0 then redis.call('HDEL', callKey, ch) else redis.call('HSET', callKey, ch, table.concat(out, ',')) end
    end
  end
  if trackType == 'set' then redis.call('ZREM', track, field) end
  redis.call('HINCRBY', usage, category .. ':bytes', -size)
  redis.call('HINCRBY', usage, category .. ':count', -1)
  redis.call('HINCRBY', usage, 'total:bytes', -size)
end
local function markDeleted(t, pending, reason, rule, actor, at)
  t[1] = 'd' .. pending
  t[16], t[18], t[19], t[20] = reason, rule, actor, tonumber(at)
  return pk(t)
end
`
