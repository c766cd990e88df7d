package catalog

// The scripts' shared functions. A record is a cmsgpack array (see
// pack.go and record.go for the positions); scripts only ever change its
// state (t[1]) and the decision fields (t[16] to t[20]), and pk fills the
// holes below the last field with false, as Go's encoder does, so a
// record written by a script and one written by Go for the same decision
// are equal byte for byte.

// recLua defines pk(t), the packing of a record table; level(n), the call
// index level of the n-th call entry; callOf(t), a record's call id (” for
// messages); held(holdsKey, user, call), the id of the first legal hold of
// the domain that covers an artifact of user in call (a hold covers an
// artifact when every name it gives matches; a domain hold covers
// everything), or nil.
const recLua = `
local function pk(t)
  local top = 0
  for i = 1, 20 do if t[i] ~= nil then top = i end end
  for i = 1, top do if t[i] == nil then t[i] = false end end
  return cmsgpack.pack(t)
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
// in the hour bitmap, the user index, the call index and a cap-tracking
// set; unindex(...): takes an admitted record out of them and out of the
// usage counters; markDeleted(t, ...): the deleted record. Usage, daily
// bytes and monthly counters are the callers' (a batch adds them up).
const indexLua = `
local function index(bucket, field, rec, bitmap, bit, uidx, uscore, callKey, ch, hour, counter, track, trackType, score)
  redis.call('HSET', bucket, field, rec)
  redis.call('SETBIT', bitmap, bit, 1)
  if uscore ~= '' then redis.call('ZADD', uidx, uscore, field) end
  if ch ~= '' then
    local v = redis.call('HGET', callKey, ch)
    if v then v = v .. ',' .. hour else v = hour end
    redis.call('HSET', callKey, ch, v)
    redis.call('INCR', counter)
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
