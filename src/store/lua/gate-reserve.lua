-- The first-come gate: decides one IssueCoupon atomically (I1, I2).
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] free  KEYS[5] pending  KEYS[6] issued  KEYS[7] redeem
-- ARGV[1] user id  ARGV[2] now (ms)
-- Returns {status, seq, state}:
--   'RESERVED', seq, total  a slot was taken for the user and journaled in pending
--   'EXISTING', seq, st, p  the user already holds seq; st is PENDING, ISSUED or REDEEMED; p is '1'
--                         while that seq's publish is unacknowledged (still in the pending journal)
--   'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT'
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_FOUND'} end
local user = ARGV[1]
local now = tonumber(ARGV[2])

-- A winner asking again learns their seq, even after the window closed or the coupon sold out.
local held = redis.call('HGET', KEYS[2], user)
if held then
  local state = 'PENDING'
  local r = redis.call('HGET', KEYS[7], user)
  if r and string.sub(r, 1, 1) == 'R' then state = 'REDEEMED'
  elseif redis.call('HEXISTS', KEYS[6], user) == 1 then state = 'ISSUED' end
  local unacked = '0'
  if redis.call('ZSCORE', KEYS[5], user) then unacked = '1' end
  return {'EXISTING', held, state, unacked}
end

local meta = redis.call('HMGET', KEYS[1], 'total', 'opens_ms', 'closes_ms')
local total, opens, closes = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
if now < opens then return {'NOT_OPEN'} end
if closes > 0 and now >= closes then return {'CLOSED'} end
if redis.call('HLEN', KEYS[2]) >= total then return {'SOLD_OUT'} end

local seq = redis.call('LPOP', KEYS[4])
if not seq then seq = redis.call('INCR', KEYS[3]) end
redis.call('HSET', KEYS[2], user, seq)
redis.call('ZADD', KEYS[5], now, user)
return {'RESERVED', tostring(seq), meta[1]}
