-- Rebuilds redemption state from the ledger after Redis lost it, before a redeem or cancel
-- decides. Never overwrites newer state: seq and issued_at are set only when absent, a redemption
-- value only when the ledger's version is higher, and cancelled orders are added to what is there,
-- so callers may repeat it and split a large coupon over several calls.
-- The gate's meta is left alone: only the gate rebuild (gate-load.lua) may arm a gate.
-- KEYS[1] winners  KEYS[2] issued  KEYS[3] redeem  KEYS[4] cancelled  KEYS[5] redeem-loaded
-- KEYS[6] meta (read only, for the coupon's deadline)
-- ARGV[1] '1' to mark the coupon's redemption state loaded once these are in (the last call of a
--         whole-coupon load), '0' otherwise
-- ARGV[2] the coupon's deadline computed from the ledger, used while there is no gate ('' = none).
--         Every call of one load passes the same one, so the loaded flag never outlives the state
--         it vouches for (lib/expiry.lua).
-- ARGV[3..] records, each one of:
--   'U', user, seq, issued_at (ms), redeem value ('' for none), its version   a ledger row
--   'X', user, order id                                                      a cancelled order
-- Returns the number of redemption values written.
local written = 0
local i = 3
while i <= #ARGV do
  local user = ARGV[i + 1]
  if ARGV[i] == 'U' then
    redis.call('HSETNX', KEYS[1], user, ARGV[i + 2])
    redis.call('HSETNX', KEYS[2], user, ARGV[i + 3])
    local value = ARGV[i + 4]
    if value ~= '' then
      local current = redis.call('HGET', KEYS[3], user) or ''
      local version = tonumber(string.match(current, '|(%d+)|%d+$') or '0')
      if version < tonumber(ARGV[i + 5]) then
        redis.call('HSET', KEYS[3], user, value)
        written = written + 1
      end
    end
    i = i + 6
  else
    redis.call('SADD', KEYS[4], user .. '|' .. ARGV[i + 2])
    i = i + 3
  end
end
if ARGV[1] == '1' then redis.call('SET', KEYS[5], '1') end
expire_new(coupon_deadline(KEYS[6], ARGV[2]), KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return written
