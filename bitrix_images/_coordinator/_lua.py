"""
The Lua scripts of the coordinator: each one decision, atomic on the Redis server.

Times are read from Redis's own clock (``TIME``) so that hosts whose clocks disagree still
share one bucket. Numbers go back as strings: Redis would truncate a Lua number to an integer.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "EXTEND",
    "HOLDER",
    "PACE",
    "READ_TOKENS",
    "REFUSE",
    "RELEASE",
    "RESOLVE",
    "SETTLE",
    "STORE_TOKENS",
    "TRY_LOCK",
]

_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS[1] the bucket; KEYS[2k], KEYS[2k+1] each method's operating hash and reservations.
# ARGV: interval, tolerance, operating threshold, reset grain, hold seconds, reservation id,
# and '1' when this process saw QUERY_LIMIT_EXCEEDED since its last round trip ('only': tell
# that and book nothing).
# When a method is near its operating limit nothing is booked and the wait for its reset is
# returned as {'operating', wait}; otherwise one bucket slot (GCRA: the theoretical arrival
# time moves on by one interval) and one reservation per method with a report are booked, and
# the wait before sending is returned as {'bucket', wait, reservations}.
PACE: Final = (
    _NOW
    + """
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local threshold, grain = tonumber(ARGV[3]), tonumber(ARGV[4])
local hold, id = tonumber(ARGV[5]), ARGV[6]
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if ARGV[7] ~= '0' and tat < now + tolerance + interval then
  -- The portal's counter is full (the local LeakyBucket.penalize rule).
  tat = now + tolerance + interval
  redis.call('SET', KEYS[1], string.format('%.6f', tat),
             'PX', math.ceil((tat - now) * 1000) + 1000)
end
if ARGV[7] == 'only' then return {'penalized', '0'} end
local wait = 0
for i = 2, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
  local f = redis.call('HMGET', KEYS[i], 'operating', 'reset_at', 'cost')
  local operating, reset_at = tonumber(f[1]), tonumber(f[2])
  if operating and reset_at then
    local held = redis.call('ZCARD', KEYS[i + 1]) + 1
    local projected = operating + (tonumber(f[3]) or 0) * held
    local until_reset = reset_at + grain - now
    if projected >= threshold and until_reset > wait then wait = until_reset end
  end
end
if wait > 0 then return {'operating', string.format('%.6f', wait)} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', next_tat),
           'PX', math.ceil((next_tat - now) * 1000) + 1000)
local delay = tat - tolerance - now
if delay < 0 then delay = 0 end
local reserved = 0
for i = 2, #KEYS, 2 do
  -- Only a method the portal reports on has a budget to reserve from (downloads have none).
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('ZADD', KEYS[i + 1], now + delay + hold, id)
    redis.call('PEXPIRE', KEYS[i + 1], math.ceil((delay + hold) * 1000))
    reserved = reserved + 1
  end
end
return {'bucket', string.format('%.6f', delay), reserved}
"""
)

# KEYS[2k-1], KEYS[2k] each method's operating hash and reservations. ARGV: reservation id
# ('' for none), how long a report is worth keeping, then per method: the reported operating
# seconds ('' when the answer had none), operating_reset_at (''), and the seconds of
# processing this request spent on the method ('').
SETTLE: Final = """
local id, keep = ARGV[1], math.ceil(tonumber(ARGV[2]) * 1000)
for i = 1, #KEYS, 2 do
  local a = 3 + (i - 1) / 2 * 3
  if id ~= '' then redis.call('ZREM', KEYS[i + 1], id) end
  if ARGV[a] ~= '' then
    redis.call('HSET', KEYS[i], 'operating', ARGV[a])
    if ARGV[a + 1] ~= '' then
      redis.call('HSET', KEYS[i], 'reset_at', ARGV[a + 1])
    else
      redis.call('HDEL', KEYS[i], 'reset_at')
    end
  end
  if ARGV[a + 2] ~= '' then
    local old, sample = tonumber(redis.call('HGET', KEYS[i], 'cost')), tonumber(ARGV[a + 2])
    if old then sample = old * 0.75 + sample * 0.25 end
    redis.call('HSET', KEYS[i], 'cost', string.format('%.6f', sample))
  end
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], keep) end
end
return 1
"""

# KEYS[1] the alias of the refresh token a caller gave. ARGV: its fingerprint, milliseconds
# an alias is kept. Returns the lineage of its grant; a token never seen starts a lineage of
# its own, named by its fingerprint.
RESOLVE: Final = """
local lineage = redis.call('GET', KEYS[1])
if lineage then return lineage end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS[1] a grant. ARGV: a pair to store only when the grant has none ('' for none),
# milliseconds a grant is kept. Returns the stored pair, whether its refresh was refused, and
# the member_id and user_id of its first refresh (nils when there is none).
READ_TOKENS: Final = """
if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'access_token', ARGV[1], 'refresh_token', ARGV[2],
             'expires_at', ARGV[3], 'client_endpoint', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return redis.call('HMGET', KEYS[1], 'access_token', 'refresh_token', 'expires_at',
                  'client_endpoint', 'refused', 'member_id', 'user_id')
"""

# KEYS[1] the lock. ARGV: a random token, milliseconds until the lock expires by itself.
TRY_LOCK: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS[1] the lock. ARGV: the token it was taken with, milliseconds. The heartbeat of a
# refresh in progress: the lock's expiry moves on only while it is still ours.
EXTEND: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] a lock. Who holds it (the token it was taken with), or nil.
HOLDER: Final = """
return redis.call('GET', KEYS[1])
"""

# KEYS[1] the lock. ARGV: the token it was taken with. Delete it only if it is still ours:
# after it expired another process may hold it.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the grant, KEYS[2] its lock, KEYS[3] the alias of the new refresh token. ARGV: the
# lock's token, the new pair (4 fields), the member_id and user_id of the OAuth answer ('' when
# it had none), the grant's lineage, milliseconds a grant and an alias are kept.
# An answer for another user than the grant's first one is never stored in it ('other').
# Storing the pair and releasing the lock in one step keeps the new pair unknown to Redis
# for as short a time as possible after the OAuth server rotated it.
STORE_TOKENS: Final = """
local owner = redis.call('HMGET', KEYS[1], 'member_id', 'user_id')
local result = 'stored'
if ARGV[6] ~= '' and owner[1] and (owner[1] ~= ARGV[6] or owner[2] ~= ARGV[7]) then
  result = 'other'
else
  redis.call('HSET', KEYS[1], 'access_token', ARGV[2], 'refresh_token', ARGV[3],
             'expires_at', ARGV[4], 'client_endpoint', ARGV[5])
  redis.call('HDEL', KEYS[1], 'refused')
  if ARGV[6] ~= '' and not owner[1] then
    redis.call('HSET', KEYS[1], 'member_id', ARGV[6], 'user_id', ARGV[7])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
  redis.call('SET', KEYS[3], ARGV[8], 'PX', ARGV[9])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return result
"""

# KEYS[1] the grant, KEYS[2] its lock. ARGV: the lock's token, the refresh token the OAuth
# server refused (invalid_grant). The grant is marked refused unless a newer pair was stored
# meanwhile: a refused pair never wins again. The lock is released.
REFUSE: Final = """
if redis.call('HGET', KEYS[1], 'refresh_token') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'refused', '1')
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
