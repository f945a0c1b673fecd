-- Gives up a cache entry's lock (its holder's fetch failed): palisade's RedisCacheStore.
--
-- KEYS[1]  the entry's lock
--
-- Returns the number of keys removed.
return redis.call('DEL', KEYS[1])
