-- The ledger committed these rows: mark them issued for GetUserCoupon and RedeemCoupon.
-- KEYS[1] issued  KEYS[2] winners  KEYS[3] meta
-- ARGV: triples of user id, seq, issued_at (ms)
-- Only while the gate exists: after a Redis loss the gate is rebuilt from the ledger instead.
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
for i = 1, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
