-- The ledger committed these rows: mark them issued for GetUserCoupon and RedeemCoupon.
-- KEYS[1] issued  KEYS[2] winners  KEYS[3] meta  KEYS[4..] every key of the coupon
-- ARGV[1] now (ms)  ARGV[2..] triples of user id, seq, issued_at (ms)
-- Only while the gate exists: after a Redis loss the gate is rebuilt from the ledger instead.
-- When this completes a coupon that has a valid_until but no deadline yet (no closes_at), it can
-- no longer be issued, and after valid_until no longer redeemed: every key of the coupon then
-- expires at max(valid_until, now) + retention_ms, the rule arming applies to a complete coupon.
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
for i = 2, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
local m = redis.call('HMGET', KEYS[3], 'total', 'valid_until_ms', 'expire_at_ms', 'retention_ms')
local deadline = tonumber(m[3] or '0') or 0
local validUntil = tonumber(m[2] or '0') or 0
if deadline == 0 and m[4] and validUntil > 0 and redis.call('HLEN', KEYS[1]) >= tonumber(m[1]) then
  deadline = math.max(validUntil, tonumber(ARGV[1])) + tonumber(m[4])
  redis.call('HSET', KEYS[3], 'expire_at_ms', deadline)
  for i = 4, #KEYS do redis.call('PEXPIREAT', KEYS[i], deadline) end
else
  expire_new(deadline, KEYS[1], KEYS[2])
end
return 1
