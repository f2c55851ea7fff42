-- RedeemCoupon: binds an issued coupon to an order, atomically (I5). Idempotent per order.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] issued  KEYS[4] redeem  KEYS[5] cancelled  KEYS[6] outbox
-- KEYS[7] redeem-loaded
-- ARGV[1] user id  ARGV[2] order id  ARGV[3] now (ms)
-- ARGV[4] valid_until_ms to use instead of meta's ('' = read meta; set when meta was lost and the
--         caller read the coupon from the ledger)
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
-- The redeem value is "<R|C>|<order id>|<version>|<at ms>"; version grows by one per change.
-- Outbox members are "<user>\n<redeem value>"; user ids hold no control characters, so the range
-- ["<user>\n", "<user>\v") holds exactly this user's.
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
if redis.call('EXISTS', KEYS[7]) == 0 then return {'UNLOADED'} end

local seq = redis.call('HGET', KEYS[2], user) or ''
local issued = redis.call('HGET', KEYS[3], user) or ''
local current = redis.call('HGET', KEYS[4], user) or ''
-- Greedy (.*) keeps order ids that contain '|' whole: version and time are digits only.
local state, held, version = string.match(current, '^([RC])|(.*)|(%d+)|%d+$')
version = tonumber(version or '0')

local function reply(status, value)
  local out = {status, seq, issued, value}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], '[' .. user .. '\n', '(' .. user .. '\011')) do
    out[#out + 1] = m
  end
  return out
end

-- A cancelled order is refused first, whatever holds the coupon now: it can never redeem again.
-- (A cancelled order never holds the coupon: redeeming it is refused, cancelling releases it.)
if redis.call('SISMEMBER', KEYS[5], user .. '|' .. order) == 1 then return {'CANCELLED', seq, issued, current} end
if state == 'R' then
  if held == order then return reply('UNCHANGED', current) end
  return {'ALREADY_REDEEMED', seq, issued, current}
end
if issued == '' then return {'MISSING', seq, issued, current} end
if validUntil > 0 and now > validUntil then return {'EXPIRED', seq, issued, current} end

local value = 'R|' .. order .. '|' .. (version + 1) .. '|' .. ARGV[3]
redis.call('HSET', KEYS[4], user, value)
redis.call('ZADD', KEYS[6], 0, user .. '\n' .. value)
return reply('REDEEMED', value)
