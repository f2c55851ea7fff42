-- Rebuilds redemption state from the ledger after Redis lost it, before a redeem or cancel
-- decides. Never overwrites newer state: seq and issued_at are set only when absent, a redemption
-- value only when the ledger's version is higher, and cancelled orders are added to what is there,
-- so callers may repeat it and split a large coupon over several calls.
-- The gate's meta is left alone: only the gate rebuild (gate-load.lua) may arm a gate.
-- KEYS[1] winners  KEYS[2] issued  KEYS[3] redeem  KEYS[4] cancelled  KEYS[5] redeem-loaded
-- KEYS[6] meta (read only, for the coupon's deadline)
-- KEYS[7] this load's token (coupon:{id}:redeem-load:<token>): how many records it has written.
--         Redis losing its state during the load loses the token (a restart) or the last calls'
--         writes with their counts (a failover drops a suffix of the writes, and each call's
--         writes and count replicate as one unit); marking the coupon loaded then refuses, since a
--         partial redeem or cancelled map would let an order redeem twice or after its cancel.
-- KEYS[8] the redemption loss marker (coupon:{id}:redeem-load-after, store/loss-guard.ts)
-- ARGV[1] what this call is:
--   'U' records for one user, outside any whole-coupon load (no token)
--   'B' a whole-coupon load begins: ARGV[3] how long (ms) the token may wait for the next call,
--       ARGV[4] the loss marker's value the load waited for ('' = none). A marker gone or changed
--       means Redis lost its state again since the wait: the load starts over and waits again.
--   'C' a chunk of that load: ARGV[3] as for 'B'
--   'M' the load's last call: marks the coupon loaded if the token counts ARGV[3] records.
--       ARGV[4] the change floor (ms; '' = none): redeem.lua and cancel-redemption.lua refuse a
--       change whose time is before it (CLOCK_BEHIND), so the ledger may drop every change behind
--       the load's fence with an earlier time (store/loss-guard.ts fenceBoundMs).
-- ARGV[2] the coupon's deadline computed from the ledger, used while there is no gate ('' = none).
--         Every call of one load passes the same one, so the loaded flag never outlives the state
--         it vouches for (lib/expiry.lua).
-- ARGV[4..] records ('U' and 'C'), each one of:
--   'U', user, seq, issued_at (ms), redeem value ('' for none), its version   a ledger row
--   'X', user, order id                                                      a cancelled order
-- Returns the number of redemption values written ('U', 'C'), 1 ('B', 'M'), or -1 when Redis lost
-- state during this load ('B', 'C', 'M'): nothing is marked loaded, and the caller starts over.
local mode = ARGV[1]
local function interrupted()
  redis.call('DEL', KEYS[7])
  return -1
end

if mode == 'B' then
  if ARGV[4] ~= '' and redis.call('GET', KEYS[8]) ~= ARGV[4] then return interrupted() end
  redis.call('SET', KEYS[7], '0', 'PX', ARGV[3])
  return 1
end
if mode ~= 'U' and redis.call('EXISTS', KEYS[7]) == 0 then return interrupted() end

if mode == 'M' then
  if tonumber(redis.call('GET', KEYS[7])) ~= tonumber(ARGV[3]) then return interrupted() end
  redis.call('DEL', KEYS[7])
  local floor = tonumber(ARGV[4] or '') or 0
  redis.call('SET', KEYS[5], floor > 0 and tostring(floor) or '1')
  expire_new(coupon_deadline(KEYS[6], ARGV[2]), KEYS[5])
  return 1
end

local written = 0
local records = 0
local i = 4
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
  records = records + 1
end
if mode == 'C' then
  redis.call('INCRBY', KEYS[7], records)
  redis.call('PEXPIRE', KEYS[7], ARGV[3])
end
expire_new(coupon_deadline(KEYS[6], ARGV[2]), KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return written
