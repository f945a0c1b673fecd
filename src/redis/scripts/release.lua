-- Releases an idempotency record, if the caller's claim still holds it (compare and delete):
-- palisade's RedisIdempotencyStore.
--
-- KEYS[1]  the record
-- KEYS[2]  the owner's quota, or KEYS[1] when anonymous
-- ARGV[1]  the caller's fencing token
-- ARGV[2]  the record's member in the quota set
-- ARGV[3]  '1' when the record has an owner, '0' when anonymous
--
-- Returns 1 when released, 0 when the claim no longer held the record.
local held = redis.call('HMGET', KEYS[1], 't', 's')
if held[1] ~= ARGV[1] or held[2] ~= 'c' then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
