-- CancelRedemption, the compensation: REDEEMED for the order goes back to ISSUED, once (I5).
-- The order is remembered as cancelled, so a late redeem of it is refused.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] issued  KEYS[4] redeem  KEYS[5] cancelled  KEYS[6] outbox
-- KEYS[7] redeem-loaded
-- ARGV[1] user id  ARGV[2] order id  ARGV[3] now (ms)
-- ARGV[4] '1' when the caller already consulted the ledger (the coupon exists, and the user's row,
--         if any, was restored), so missing state here means the coupon is not issued
-- Returns {status, seq, issued_ms, redeem value, outbox members of this user...}:
--   'CANCELLED'       REDEEMED for this order became ISSUED; its event is journaled in the outbox
--   'RECORDED'        not redeemed: nothing to restore, but the order is now remembered as
--                     cancelled (journaled too, so the ledger remembers it)
--   'UNCHANGED'       this order was already cancelled (a repeat)
--   'ORDER_MISMATCH'  REDEEMED for another order; nothing changed
--   'MISSING'         no issued state here (ARGV[4] not '1'): the caller asks the ledger first
--   'NO_META'         no gate state for the coupon (ARGV[4] not '1')
--   'UNLOADED'        the coupon's redemption state is not in Redis: the caller loads it first
-- Value and outbox formats are redeem.lua's.
local user, order = ARGV[1], ARGV[2]
local checked = ARGV[4] == '1'
if not checked and redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_META'} end
if redis.call('EXISTS', KEYS[7]) == 0 then return {'UNLOADED'} end

local seq = redis.call('HGET', KEYS[2], user) or ''
local issued = redis.call('HGET', KEYS[3], user) or ''
local current = redis.call('HGET', KEYS[4], user) or ''
local state, held, version = string.match(current, '^([RC])|(.*)|(%d+)|%d+$')
version = tonumber(version or '0')

local function reply(status, value)
  local out = {status, seq, issued, value}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], '[' .. user .. '\n', '(' .. user .. '\011')) do
    out[#out + 1] = m
  end
  return out
end

local pair = user .. '|' .. order
if redis.call('SISMEMBER', KEYS[5], pair) == 1 then return reply('UNCHANGED', current) end
local status = 'RECORDED'
if state == 'R' then
  if held ~= order then return {'ORDER_MISMATCH', seq, issued, current} end
  status = 'CANCELLED'
elseif issued == '' and not checked then
  return {'MISSING', seq, issued, current}
end

local value = 'C|' .. order .. '|' .. (version + 1) .. '|' .. ARGV[3]
redis.call('HSET', KEYS[4], user, value)
redis.call('SADD', KEYS[5], pair)
redis.call('ZADD', KEYS[6], 0, user .. '\n' .. value)
return reply(status, value)
