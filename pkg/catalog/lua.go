package catalog

// heldLua defines held(holdsKey, user, call): the id of the first legal
// hold of the domain that covers an artifact of user in call, or nil. A
// hold covers an artifact when every name it gives matches (a domain hold
// covers everything). Holds are JSON values of the domain's holds hash,
// written by the policy service; the hash shares the domain's slot, so a
// script that deletes can check it in the same atomic step.
const heldLua = `
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

// removeLua defines remove(art, idx, uidx, call, usage, track, trackType,
// id, size, category): takes an admitted artifact out of every index, its
// cap-tracking set and the usage counters. The artifact hash itself stays
// (the caller marks it deleted).
const removeLua = `
local function remove(idx, uidx, callKey, usage, track, trackType, id, size, category)
  redis.call('ZREM', idx, id)
  redis.call('ZREM', uidx, id)
  redis.call('SREM', callKey, id)
  if trackType == 'set' then redis.call('ZREM', track, id) end
  redis.call('HINCRBY', usage, category .. ':bytes', -size)
  redis.call('HINCRBY', usage, category .. ':count', -1)
  redis.call('HINCRBY', usage, 'total:bytes', -size)
end
`

// admitLua defines admit(KEYS, id, score, size, category, trackType,
// expireAt, day, fields): writes an admitted artifact (an artifact hash
// without a state field is admitted: storing "st=a" on every recording
// would cost a hash entry each, so only refusals and deletions store it), its indexes, its
// cap-tracking entry and usage, and returns the domain's new total bytes.
// KEYS: 1 art, 2 idx, 3 uidx (or absent), 4 call (or absent), 5 usage,
// 6 track, 7 daily.
const admitLua = `
local function admit(id, score, size, category, hasUser, hasCall, trackType, expireAt, day, fields, pending, evicted)
  redis.call('HSET', KEYS[1], unpack(fields))
  if pending ~= '' then redis.call('HSET', KEYS[1], 'pe', pending) end
  if evicted ~= '' then redis.call('HSET', KEYS[1], 'ev', evicted) end
  redis.call('ZADD', KEYS[2], score, id)
  if hasUser == '1' then redis.call('ZADD', KEYS[3], score, id) end
  if hasCall == '1' then redis.call('SADD', KEYS[4], id) end
  redis.call('HINCRBY', KEYS[5], category .. ':bytes', size)
  redis.call('HINCRBY', KEYS[5], category .. ':count', 1)
  local total = redis.call('HINCRBY', KEYS[5], 'total:bytes', size)
  redis.call('HINCRBY', KEYS[7], day, size)
  if trackType == 'set' then
    redis.call('ZADD', KEYS[6], score, id)
  elseif trackType == 'counter' then
    redis.call('INCR', KEYS[6])
    redis.call('EXPIREAT', KEYS[6], tonumber(expireAt))
  end
  return total
end
`
