-- Completes an idempotency record, if the caller's claim still holds it: palisade's
-- RedisIdempotencyStore.
--
-- KEYS[1]  the record
-- KEYS[2]  the owner's quota, or KEYS[1] when anonymous
-- ARGV[1]  the caller's fencing token
-- ARGV[2]  the response to store (palisade's binary format)
-- ARGV[3]  how long to keep it, in milliseconds
-- ARGV[4]  the record's member in the quota set
-- ARGV[5]  '1' when the record has an owner, '0' when anonymous
-- ARGV[6]  '1' for a result not kept (a few bytes), '0' for a response
--
-- Returns 1 when stored, 0 when the claim no longer holds the record (its lease ended and the
-- key was taken over, or the record is gone): nothing is written then.
--
-- Out of memory: Redis checks memory only before a script's first write, and only for
-- commands that grow memory (HSET does, HDEL does not). A response's HSET comes first, so a
-- full Redis refuses it (the caller records a result not kept instead); a result not kept
-- writes HDEL first, so it is stored even then: the key must record that its request ran.
if redis.replicate_commands then
  redis.replicate_commands()
end
local held = redis.call('HMGET', KEYS[1], 't', 's')
if held[1] ~= ARGV[1] or held[2] ~= 'c' then
  return 0
end
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[1], 'l')
end
redis.call('HSET', KEYS[1], 's', 'd', 'v', ARGV[2])
redis.call('HDEL', KEYS[1], 'l')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[5] == '1' then
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  redis.call('ZADD', KEYS[2], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[4])
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return 1
