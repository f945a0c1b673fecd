-- Claims an idempotency record in one step: palisade's RedisIdempotencyStore.
--
-- KEYS[1]  the record (a hash: f fingerprint, t token, s state c|d, l lease end in ms, v response)
-- KEYS[2]  the owner's quota (a sorted set of its records by expiry), or KEYS[1] when anonymous
-- ARGV[1]  the request's fingerprint (32 bytes)
-- ARGV[2]  the lease, in milliseconds
-- ARGV[3]  the most records one owner may hold; 0 for an anonymous claim (no quota)
-- ARGV[4]  the record's member in the quota set
--
-- Returns one of:
--   {'claimed', token}    the caller holds the record now, with this fencing token
--   {'done', response}    the request completed: the stored response (palisade's binary format)
--   {'busy', ms}          another request with this fingerprint holds it, for ms more
--   {'mismatch'}          the record belongs to a request with another fingerprint
--   {'quota'}             a new record, and its owner holds its quota of records
--
-- Tokens come from the server's clock in microseconds, or the record's last token + 1 when that
-- is greater: a token is never given twice for one record, even after the record was deleted,
-- unless the server's clock is stepped back by more than a lease.
local record, quota = KEYS[1], KEYS[2]
local fingerprint, lease = ARGV[1], tonumber(ARGV[2])
local max_owned, member = tonumber(ARGV[3]), ARGV[4]

-- Redis 6.2 may still replicate scripts verbatim, which forbids TIME before a write; 7 always
-- replicates effects and ignores this.
if redis.replicate_commands then
  redis.replicate_commands()
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local token = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local held = redis.call('HMGET', record, 'f', 't', 's', 'l')
if held[1] then
  if held[3] == 'd' then
    if held[1] ~= fingerprint then
      return {'mismatch'}
    end
    return {'done', redis.call('HGET', record, 'v')}
  end
    local lease_end = tonumber(held[4]) or 0
  if lease_end > now then
    if held[1] ~= fingerprint then
      return {'mismatch'}
    end
    return {'busy', string.format('%.0f', lease_end - now)}
  end
  -- The holder's lease is over: the key is free, and taken over with a greater token.
  token = math.max(tonumber(held[2]) + 1, token)
elseif max_owned > 0 then
  -- Counted without a write: the record's HSET below must be the script's first write, so
  -- that a Redis out of memory refuses it (Redis checks memory only before a script's first
  -- write, and only for commands that grow memory).
  if redis.call('ZCOUNT', quota, '(' .. string.format('%.0f', now), '+inf') >= max_owned then
    return {'quota'}
  end
end

-- A claimed record outlives its lease by one more lease, so a holder past its lease can still
-- complete until another request takes the key over.
local life = 2 * lease
local text = string.format('%.0f', token)
redis.call('HSET', record, 'f', fingerprint, 't', text, 's', 'c', 'l', string.format('%.0f', now + lease))
redis.call('HDEL', record, 'v')
redis.call('PEXPIRE', record, string.format('%.0f', life))
if max_owned > 0 then
  redis.call('ZREMRANGEBYSCORE', quota, '-inf', string.format('%.0f', now))
  redis.call('ZADD', quota, string.format('%.0f', now + life), member)
  local last = redis.call('ZRANGE', quota, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', quota, last[2])
end
return {'claimed', text}
