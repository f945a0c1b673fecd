-- Takes a cache entry's lock (for a refresh) if nobody holds it: palisade's RedisCacheStore.
--
-- KEYS[1]  the entry's lock
-- ARGV[1]  the lease, in milliseconds
-- ARGV[2]  the caller's lock token (kept in the lock: only it gives the lock up)
--
-- Returns 1 when this caller holds the lock now, 0 when someone else does.
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
