-- CancelRedemption, the compensation: REDEEMED for the order goes back to ISSUED, once (I5).
-- The order is remembered as cancelled, so a late redeem of it is refused.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] issued  KEYS[4] redeem  KEYS[5] cancelled  KEYS[6] outbox
-- KEYS[7] redeem-loaded
-- ARGV[1] user id  ARGV[2] order id  ARGV[3] now (ms)
-- ARGV[4] '1' when the caller already consulted the ledger (the coupon exists, and the user's row,
--         if any, was restored), so missing state here means the coupon is not issued
-- ARGV[5] the coupon's deadline computed from the ledger, for keys created while there is no gate
--         ('' = none; lib/expiry.lua)
-- Returns {status, seq, issued_ms, redeem value, outbox members of this user...}:
--   'CANCELLED'       REDEEMED for this order became ISSUED; its event is journaled in the outbox
--   'RECORDED'        not redeemed: nothing to restore, but the order is now remembered as
--                     cancelled (journaled too, so the ledger remembers it; with version 0 when
--                     the coupon is not issued yet, since there is no state to change)
--   'UNCHANGED'       this order was already cancelled (a repeat)
--   'ORDER_MISMATCH'  REDEEMED for another order; the coupon is untouched, the order is remembered
--                     as cancelled (journaled with version 0 the first time)
--   'MISSING'         no issued state here (ARGV[4] not '1'): the caller asks the ledger first
--   'NO_META'         no gate state for the coupon (ARGV[4] not '1')
--   'UNLOADED'        the coupon's redemption state is not in Redis: the caller loads it first
--   'CLOCK_BEHIND'    ARGV[3] is before the change floor of the load that put the state back
--                     (lib/redemption.lua change_floor): nothing changed; the caller retries
-- Value and outbox formats, and the helpers used here, are in lib/redemption.lua.
local user, order = ARGV[1], ARGV[2]
local checked = ARGV[4] == '1'
if not checked and redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_META'} end
local floor = change_floor()
if not floor then return {'UNLOADED'} end
if tonumber(ARGV[3]) < floor then return {'CLOCK_BEHIND'} end

local seq, issued, current, state, held, version = redemption_state(user)
local function reply(status, value) return reply_with_outbox(status, user, seq, issued, value) end

local pair = user .. '|' .. order
-- Remembers the order as cancelled without touching the coupon's state: journaled with version 0,
-- which the ledger records as a cancelled order and never applies to the row.
local function remember_only(status)
  redis.call('SADD', KEYS[5], pair)
  redis.call('ZADD', KEYS[6], 0, user .. '\n' .. 'C|' .. order .. '|0|' .. ARGV[3])
  expire_new(coupon_deadline(KEYS[1], ARGV[5]), KEYS[5], KEYS[6])
  return reply(status, current)
end
-- A repeat of a cancel already done (its answer may have been lost) changes nothing and answers
-- as the coupon is now: the order is cancelled and holds nothing (idempotent per order id, I5).
if redis.call('SISMEMBER', KEYS[5], pair) == 1 then
  repeat_write()
  return reply('UNCHANGED', current)
end
if state == 'R' and held ~= order then
  -- Held by another order: nothing to give back, and the coupon is not touched. The order is
  -- still remembered as cancelled, so a late redeem of it is refused after the other order is
  -- compensated. Its journal entry carries version 0: the ledger records the cancelled order and
  -- never lets it change the coupon's state (a live REDEEMED always wins).
  return remember_only('ORDER_MISMATCH')
end
if state ~= 'R' and issued == '' then
  if not checked then return {'MISSING', seq, issued, current} end
  -- Not issued here, and the ledger had no row when the caller looked: the coupon is pending or
  -- was never won. There is no coupon state to change, so, as above, only the order is remembered,
  -- with version 0. A versioned change here could reach the ledger before the issuer writes the
  -- row, be dropped there, and leave Redis a version ahead of the ledger for good.
  return remember_only('RECORDED')
end
local status = 'RECORDED'
if state == 'R' then status = 'CANCELLED' end

local value = 'C|' .. order .. '|' .. (version + 1) .. '|' .. ARGV[3]
journal(user, value)
redis.call('SADD', KEYS[5], pair)
expire_new(coupon_deadline(KEYS[1], ARGV[5]), KEYS[4], KEYS[5], KEYS[6])
return reply(status, value)
