-- Arms a coupon's gate, or rebuilds it from the ledger after Redis lost it.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] issued
-- ARGV[1] total  ARGV[2] opens_ms  ARGV[3] closes_ms (0 = never)  ARGV[4] valid_until_ms (0 = never)
-- ARGV[5] highest seq in the ledger  ARGV[6..] triples of user, seq, issued_at_ms from the ledger
-- Returns 1 when armed, 0 when the gate already existed (it is left untouched).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 6, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 2])
end
redis.call('SET', KEYS[3], ARGV[5])
-- meta last: the gate answers only once the rest is in place (one script, so this is belt and braces).
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'opens_ms', ARGV[2], 'closes_ms', ARGV[3], 'valid_until_ms', ARGV[4])
return 1
