-- The publish failed: give the slot back and forget the user (I4), unless the issuer already took
-- the record (then the coupon is on its way and the caller is told OK).
-- KEYS[1] winners  KEYS[2] free  KEYS[3] pending  KEYS[4] released  KEYS[5] claimed
-- ARGV[1] user id  ARGV[2] seq
-- Returns 'RELEASED', 'CLAIMED', or 'STALE' (the user no longer holds that seq).
local user, seq = ARGV[1], ARGV[2]
if redis.call('HGET', KEYS[1], user) ~= seq then return 'STALE' end
if redis.call('HGET', KEYS[5], user) == seq then
  redis.call('ZREM', KEYS[3], user)
  return 'CLAIMED'
end
redis.call('HDEL', KEYS[1], user)
redis.call('ZREM', KEYS[3], user)
-- Tombstone: if the "failed" record did reach the broker, the issuer drops it. A set of
-- "<user>|<seq>" pairs, so a user's later releases never hide an earlier one.
redis.call('SADD', KEYS[4], user .. '|' .. seq)
redis.call('RPUSH', KEYS[2], seq)
return 'RELEASED'
