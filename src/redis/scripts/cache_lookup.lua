-- Looks a cache entry up, and takes its lock when it must be fetched: palisade's
-- RedisCacheStore.
--
-- KEYS[1]  the entry (a hash: v value, f fresh until, s stale until, e errors until (ms, server
--          clock), d the fetch's duration in microseconds)
-- KEYS[2]  the entry's lock
-- ARGV[1]  the lock's lease, in milliseconds
-- ARGV[2]  the caller's lock token (kept in the lock: only it gives the lock up)
--
-- Returns {entry, locked}: entry is false (nil) or {value, fresh ms, stale ms, errors ms, fetch
-- us}, each window as time left from now; locked is 1 when this caller took the lock, which it
-- tries only when there is no entry that may be served (absent, or past its stale window).
if redis.replicate_commands then
  redis.replicate_commands()
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function left(at)
  return string.format('%.0f', math.max(tonumber(at) - now, 0))
end

local found = redis.call('HMGET', KEYS[1], 'v', 'f', 's', 'e', 'd')
local entry = false
if found[1] then
  entry = {found[1], left(found[2]), left(found[3]), left(found[4]), found[5]}
  if tonumber(found[3]) > now then
    return {entry, 0}
  end
end
local locked = redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1])
if locked then
  return {entry, 1}
end
return {entry, 0}
