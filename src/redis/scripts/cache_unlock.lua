-- Gives up a cache entry's lock if the caller still holds it (its fetch failed, or published
-- elsewhere): palisade's RedisCacheStore.
--
-- KEYS[1]  the entry's lock
-- ARGV[1]  the caller's lock token
--
-- Returns 1 when the lock was the caller's and is gone, 0 when it was not (lapsed, or another
-- caller's now: left alone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
