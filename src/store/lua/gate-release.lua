-- The publish failed: give the slot back and forget the user (I4), unless the issuer already took
-- the record (then the coupon is on its way and the caller is told OK).
-- KEYS[1] winners  KEYS[2] free  KEYS[3] pending  KEYS[4] released  KEYS[5] claimed  KEYS[6] meta
-- ARGV[1] user id  ARGV[2] seq  ARGV[3] reserve time (ms) of the reservation whose publish failed
-- Returns 'RELEASED', 'CLAIMED', or 'STALE' (the user no longer holds that seq, or there is no
-- armed gate: Redis lost it, or it is being rebuilt, and the rebuild decides from the ledger).
-- Only the caller's own unconfirmed reservation is released. If its pending entry is gone while the
-- user still holds the seq, someone else made the record durable: the recovery loop republished and
-- confirmed it, or a rebuild took it from the ledger. Then the coupon is coming: 'CLAIMED'.
local user, seq, reservedAt = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[6]) == 0 then return 'STALE' end
if redis.call('HGET', KEYS[1], user) ~= seq then return 'STALE' end
local score = redis.call('ZSCORE', KEYS[3], user)
if redis.call('HGET', KEYS[5], user) == seq then
  if score and tonumber(score) == reservedAt then redis.call('ZREM', KEYS[3], user) end
  return 'CLAIMED'
end
if not score then return 'CLAIMED' end
-- Another reservation's entry (the user's, for the same seq): not this caller's to release.
if tonumber(score) ~= reservedAt then return 'STALE' end
redis.call('HDEL', KEYS[1], user)
redis.call('ZREM', KEYS[3], user)
-- Tombstone: if the "failed" record did reach the broker, the issuer drops it. A set of
-- "<user>|<seq>" pairs, so a user's later releases never hide an earlier one.
redis.call('SADD', KEYS[4], user .. '|' .. seq)
redis.call('RPUSH', KEYS[2], seq)
-- Counted in meta: a sold-out view's one-command recheck sees that a slot came back (gate-sold-out.lua).
redis.call('HINCRBY', KEYS[6], 'releases', 1)
expire_new(coupon_deadline(KEYS[6]), KEYS[2], KEYS[4])
return 'RELEASED'
