-- Arms a coupon's gate, or rebuilds it from the ledger after Redis lost it. Called as:
--   'rows' with a chunk of ledger rows and 'free' with a chunk of the seqs below the highest one
--   that the ledger does not hold (released, or never published), each any number of times, then
--   'arm'. Nothing answers IssueCoupon until 'arm' wrote meta, so the chunks are invisible until
--   complete. Every call does work in proportion to its own chunk only (docs/design.md#growth).
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] issued  KEYS[5] free
-- KEYS[6] this rebuild's own staged free list (coupon:{id}:free:staging:<token>)
-- KEYS[7..] every key of the coupon, whose expiry 'arm' sets
-- 'rows': ARGV[1] 'rows'  ARGV[2] how long (ms) the staged list may wait for the next call
--         ARGV[3] the coupon's deadline (ms, 0 = never)  ARGV[4..] triples of user, seq, issued_at_ms
--         Rows are ledger facts: rebuilds running at once may both write them (HSETNX).
-- 'free': ARGV[1] 'free'  ARGV[2] how long (ms) the staged list may wait for the next call
--         ARGV[3..] seqs, ascending
--         They go to this rebuild's own staged list. Two rebuilds at once each build a whole list,
--         and only the one that arms keeps its own, so no seq is ever listed twice.
-- 'arm':  ARGV[1] 'arm'  ARGV[2] total  ARGV[3] opens_ms  ARGV[4] closes_ms (0 = never)
--         ARGV[5] valid_until_ms (0 = never)  ARGV[6] highest seq in the ledger
--         ARGV[7] expire_at_ms: when every key of the coupon expires (0 = never)
--         ARGV[8] retention_ms (REDIS_RETENTION; the issuer uses it when the coupon completes)
--         ARGV[9] epoch: a token new to every arming, so that a process holding a view of the
--         coupon (gate/sold-out-view.ts) notices the gate was rebuilt
--         Puts the staged free list in place, writes meta last, and gives every key the deadline.
-- Returns 1 when it wrote, 0 when the gate already existed: it is left untouched, and the caller
-- stops (another process armed it).
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- This rebuild's staged list is of no use now. UNLINK frees a long list in the background
  -- instead of blocking every other caller.
  redis.call('UNLINK', KEYS[6])
  return 0
end

if ARGV[1] == 'rows' then
  for i = 4, #ARGV, 3 do
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 2])
  end
  expire_new(tonumber(ARGV[3]), KEYS[2], KEYS[4])
  -- A rebuild that died leaves its staged list to expire; a live one keeps it alive.
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
  return 1
end

if ARGV[1] == 'free' then
  if #ARGV >= 3 then redis.call('RPUSH', KEYS[6], unpack(ARGV, 3)) end
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
  return 1
end

-- 'arm'. The staged list (or none: no gaps) is the whole truth about free seqs.
redis.call('UNLINK', KEYS[5])
if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[5]) end
redis.call('SET', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], 'total', ARGV[2], 'opens_ms', ARGV[3], 'closes_ms', ARGV[4], 'valid_until_ms', ARGV[5],
  'expire_at_ms', ARGV[7], 'retention_ms', ARGV[8], 'epoch', ARGV[9])
-- Every key gets the same deadline, including keys written before the gate existed (redemption
-- state restored from the ledger, the staged list's own short expiry), or none at all.
local deadline = tonumber(ARGV[7])
for i = 7, #KEYS do
  if deadline > 0 then redis.call('PEXPIREAT', KEYS[i], deadline) else redis.call('PERSIST', KEYS[i]) end
end
return 1
