-- An operator's change to a live coupon (UpdateCoupon, PauseCoupon, ResumeCoupon, CloseCoupon),
-- atomic against every IssueCoupon in flight: a reservation runs wholly before or wholly after it.
-- The ledger holds the change already (catalog/changes.ts writes it first, in a transaction that
-- commits only after this answers CHANGED), so a rebuild after a Redis loss arms the changed coupon.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4..] every key of the coupon
-- ARGV[1] total ('' = unchanged)  ARGV[2] closes_ms ('' = unchanged, '0' = never)
-- ARGV[3] valid_until_ms ('' = unchanged, '0' = never)  ARGV[4] paused ('1', '0', '' = unchanged)
-- ARGV[5] expire_at_ms: the coupon's retention deadline after the change (0 = never)
-- ARGV[6] a new epoch, so every in-process sold-out view drops what it knew (gate-sold-out.lua)
-- Returns {'CHANGED', accepted, highest seq handed out}, {'NOT_ARMED'} (no gate in Redis: lost or
-- expired; nothing written), or {'BELOW_ACCEPTED', floor}: the new total is below a seq the gate
-- has handed out (winners, or a released seq waiting in the free list), which would leave a winner
-- with a seq past the total; nothing written.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOT_ARMED'} end
local accepted = redis.call('HLEN', KEYS[2])
local highest = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local floor = math.max(accepted, highest)
if ARGV[1] ~= '' and tonumber(ARGV[1]) < floor then return {'BELOW_ACCEPTED', tostring(floor)} end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'total', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'closes_ms', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'valid_until_ms', ARGV[3]) end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'paused', '1') elseif ARGV[4] == '0' then redis.call('HDEL', KEYS[1], 'paused') end
-- The window or the quantity moved the deadline (a restock of a completed coupon: none again).
local deadline = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'expire_at_ms', ARGV[5], 'epoch', ARGV[6])
for i = 4, #KEYS do
  if deadline > 0 then redis.call('PEXPIREAT', KEYS[i], deadline) else redis.call('PERSIST', KEYS[i]) end
end
return {'CHANGED', tostring(accepted), tostring(highest)}
