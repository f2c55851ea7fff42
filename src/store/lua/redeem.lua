-- RedeemCoupon: binds an issued coupon to an order, atomically (I5). Idempotent per order.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] issued  KEYS[4] redeem  KEYS[5] cancelled  KEYS[6] outbox
-- KEYS[7] redeem-loaded
-- ARGV[1] user id  ARGV[2] order id  ARGV[3] now (ms)
-- ARGV[4] valid_until_ms to use instead of meta's ('' = read meta; set when meta was lost and the
--         caller read the coupon from the ledger)
-- ARGV[5] the coupon's deadline computed from the ledger, for keys created while there is no gate
--         ('' = none; lib/expiry.lua)
-- Returns {status, seq, issued_ms, redeem value, outbox members of this user...}:
--   'REDEEMED'          ISSUED became REDEEMED for the order; its event is journaled in the outbox
--   'UNCHANGED'         already REDEEMED for this order (a repeat)
--   'CANCELLED'         this order's redemption was cancelled; it can never redeem again
--   'ALREADY_REDEEMED'  REDEEMED for another order
--   'EXPIRED'           past valid_until
--   'MISSING'           no issued state here: the coupon may be pending, never won, or lost by
--                       Redis; the caller asks the ledger (and restores) before answering
--   'NO_META'           no gate state for the coupon: unknown, or lost by Redis
--   'UNLOADED'          the coupon's redemption state is not (or no longer) in Redis: the caller
--                       loads it from the ledger first
--   'CLOCK_BEHIND'      ARGV[3] is before the change floor of the load that put the state back
--                       (lib/redemption.lua change_floor): nothing changed; the caller retries
-- Value and outbox formats, and the helpers used here, are in lib/redemption.lua.
local user, order, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local validUntil
if ARGV[4] ~= '' then
  validUntil = tonumber(ARGV[4])
else
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'NO_META'} end
  validUntil = tonumber(redis.call('HGET', KEYS[1], 'valid_until_ms') or '0')
end
-- Without it, a coupon the ledger says is redeemed could look merely issued (the gate rebuild
-- restores issued state only).
local floor = change_floor()
if not floor then return {'UNLOADED'} end
if now < floor then return {'CLOCK_BEHIND'} end

local seq, issued, current, state, held, version = redemption_state(user)
local function reply(status, value) return reply_with_outbox(status, user, seq, issued, value) end

-- A cancelled order is refused first, whatever holds the coupon now: it can never redeem again.
-- (A cancelled order never holds the coupon: redeeming it is refused, cancelling releases it.)
if redis.call('SISMEMBER', KEYS[5], user .. '|' .. order) == 1 then return {'CANCELLED', seq, issued, current} end
if state == 'R' then
  if held == order then
    repeat_write()
    return reply('UNCHANGED', current)
  end
  return {'ALREADY_REDEEMED', seq, issued, current}
end
if issued == '' then return {'MISSING', seq, issued, current} end
if validUntil > 0 and now > validUntil then return {'EXPIRED', seq, issued, current} end

local value = 'R|' .. order .. '|' .. (version + 1) .. '|' .. ARGV[3]
journal(user, value)
expire_new(coupon_deadline(KEYS[1], ARGV[5]), KEYS[4], KEYS[6])
return reply('REDEEMED', value)
