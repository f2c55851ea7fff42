-- The first-come gate: decides one IssueCoupon atomically (I1, I2).
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] free  KEYS[5] pending  KEYS[6] issued  KEYS[7] redeem
-- ARGV[1] user id  ARGV[2] now (ms)
-- ARGV[3] '1' when the caller has just marked the coupon active (store/active-coupons.ts): a
--         reservation joins the pending journal, which the recovery loop finds only through that
--         index. Without it, a call that would reserve changes nothing and answers 'MARK_FIRST', so
--         requests that cannot reserve (unknown coupon, closed, sold out, a repeat) never mark.
-- Keys it creates get the coupon's deadline (lib/expiry.lua).
-- Returns {status, seq, state}:
--   'RESERVED', seq, total  a slot was taken for the user and journaled in pending
--   'EXISTING', seq, st, p  the user already holds seq; st is PENDING, ISSUED or REDEEMED; p is '1'
--                         while that seq's publish is unacknowledged (still in the pending journal)
--   'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' | 'PAUSED' | 'MARK_FIRST'
--   'CLOCK_BEHIND'          the call's time is before the gate's reservation floor (a rebuild's
--                           fence bound, gate-load.lua): it began before the rebuild; retry
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
local user = ARGV[1]
local now = tonumber(ARGV[2])

-- A winner asking again learns their seq, even after the window closed or the coupon sold out.
local held = redis.call('HGET', KEYS[2], user)
if held then
  -- A write, so that the caller's WAIT (REDIS_WAIT_REPLICAS) covers the reservation it reports: WAIT
  -- waits for this connection's last write, and the reservation may be another process's, written
  -- earlier on the master's replication stream. Without one, a repeat could be told OK for a
  -- reservation no replica holds yet, which a failover would then lose.
  redis.call('HSET', KEYS[1], 'repeat_ms', ARGV[2])
  local state = 'PENDING'
  local r = redis.call('HGET', KEYS[7], user)
  if r and string.sub(r, 1, 1) == 'R' then state = 'REDEEMED'
  elseif redis.call('HEXISTS', KEYS[6], user) == 1 then state = 'ISSUED' end
  local unacked = '0'
  if redis.call('ZSCORE', KEYS[5], user) then unacked = '1' end
  return {'EXISTING', held, state, unacked}
end

local meta = redis.call('HMGET', KEYS[1], 'total', 'opens_ms', 'closes_ms', 'expire_at_ms', 'paused', 'reserve_floor_ms')
local total, opens, closes = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
if now < opens then return {'NOT_OPEN'} end
if closes > 0 and now >= closes then return {'CLOSED'} end
if redis.call('HLEN', KEYS[2]) >= total then return {'SOLD_OUT'} end
-- An operator's pause (gate-change.lua) holds new winners back; a sold-out coupon stays SOLD_OUT.
if meta[5] == '1' then return {'PAUSED'} end
if ARGV[3] ~= '1' then return {'MARK_FIRST'} end
-- A reservation's time is its record's requested_at. After a rebuild, the issuer drops records
-- behind the rebuild's fence reserved before this floor (records a broker appended late): no
-- reservation of this gate may carry such a time.
if meta[6] and now < tonumber(meta[6]) then return {'CLOCK_BEHIND'} end

local seq = redis.call('LPOP', KEYS[4])
if not seq then seq = redis.call('INCR', KEYS[3]) end
redis.call('HSET', KEYS[2], user, seq)
redis.call('ZADD', KEYS[5], now, user)
-- The last reservation, part of what the in-process sold-out view checks (gate-sold-out.lua): a
-- failover that dropped a reservation and a later one that took its seq leave the count and the
-- epoch as they were, but never this.
redis.call('HSET', KEYS[1], 'last_reserve', user .. '|' .. seq .. '|' .. ARGV[2])
expire_new(tonumber(meta[4] or '0') or 0, KEYS[2], KEYS[3], KEYS[5])
return {'RESERVED', tostring(seq), meta[1]}
