-- Stores a cache entry for its whole life, and gives up its lock if the caller holds it:
-- palisade's RedisCacheStore.
--
-- KEYS[1]  the entry
-- KEYS[2]  the entry's lock
-- ARGV[1]  the value
-- ARGV[2]  fresh for, ARGV[3] stale for, ARGV[4] errors for (ms from now, each window from now)
-- ARGV[5]  the fetch's duration in microseconds
-- ARGV[6]  the caller's lock token, or empty for a caller that holds none
--
-- The windows become instants of the server's clock, so every instance reading the entry
-- computes the same phase. Returns 1.
if redis.replicate_commands then
  redis.replicate_commands()
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local fresh, stale, errors = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local life = math.max(fresh, stale, errors, 1)
redis.call('HSET', KEYS[1],
  'v', ARGV[1],
  'f', string.format('%.0f', now + fresh),
  's', string.format('%.0f', now + stale),
  'e', string.format('%.0f', now + errors),
  'd', ARGV[5])
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', life))
-- Only the holder's own put frees the lock: a holder whose lease lapsed leaves its
-- successor's alone.
if ARGV[6] ~= '' and redis.call('GET', KEYS[2]) == ARGV[6] then
  redis.call('DEL', KEYS[2])
end
return 1
