-- Arms a coupon's gate, or rebuilds it from the ledger after Redis lost it. Called as:
--   'rows' with a chunk of ledger rows, and 'free' with a chunk of seqs below the highest one that
--   the ledger does not hold (released or never published; any number of times each), then 'arm'.
-- Nothing answers IssueCoupon until 'arm' wrote meta, so the chunks are invisible until complete.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] issued  KEYS[5] free
-- 'rows': ARGV[1] 'rows'  ARGV[2..] triples of user, seq, issued_at_ms
-- 'free': ARGV[1] 'free'  ARGV[2..] seqs to hand out again (KEYS[5] free list)
-- 'arm':  ARGV[1] 'arm'  ARGV[2] total  ARGV[3] opens_ms  ARGV[4] closes_ms (0 = never)
--         ARGV[5] valid_until_ms (0 = never)  ARGV[6] highest seq in the ledger
-- Returns 1 when it wrote, 0 when the gate already existed (it is left untouched).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[1] == 'rows' then
  for i = 2, #ARGV, 3 do
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 2])
  end
  return 1
end
if ARGV[1] == 'free' then
  -- Idempotent: two processes rebuilding the same coupon at once must not list a seq twice.
  for i = 2, #ARGV do
    if not redis.call('LPOS', KEYS[5], ARGV[i]) then redis.call('RPUSH', KEYS[5], ARGV[i]) end
  end
  return 1
end
redis.call('SET', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], 'total', ARGV[2], 'opens_ms', ARGV[3], 'closes_ms', ARGV[4], 'valid_until_ms', ARGV[5])
return 1
