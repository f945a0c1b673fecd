-- Removes a cache entry and its lock: palisade's RedisCacheStore.
--
-- KEYS[1]  the entry
-- KEYS[2]  the entry's lock
--
-- Returns the number of keys removed.
return redis.call('DEL', KEYS[1], KEYS[2])
