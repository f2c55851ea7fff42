-- Arms a coupon's gate, or rebuilds it from the ledger after Redis lost it. Called as:
--   'begin' once (a rebuild only), then 'rows' with a chunk of ledger rows and 'free' with a chunk
--   of the seqs below the highest one that the ledger does not hold (released, or never
--   published), each any number of times, then 'arm'. Nothing answers IssueCoupon until 'arm' wrote
--   meta, so the chunks are invisible until complete. Every call does work in proportion to its own
--   chunk only (docs/design.md#growth). A new coupon is armed with 'arm' alone.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] next  KEYS[4] issued  KEYS[5] free
-- KEYS[6] this rebuild's own staged free list (coupon:{id}:free:staging:<token>)
-- KEYS[7] this rebuild's token (coupon:{id}:rebuild:<token>): the count of rows and free seqs it
--         has written so far. Redis losing its state during the rebuild loses the token with it
--         (a restart), or the last calls' writes together with their counts (a failover drops a
--         suffix of the writes, and each call's writes and count replicate as one unit). Either
--         way 'arm' finds the count short or gone and refuses: a partial gate (winners or free
--         seqs missing) would hand out held seqs, and seqs past the total.
-- KEYS[8] the gate's loss marker (coupon:{id}:rebuild-after, store/loss-guard.ts)
-- KEYS[9..] every key of the coupon, whose expiry 'arm' sets
-- 'begin': ARGV[1] 'begin'  ARGV[2] how long (ms) the token may wait for the next call
--         ARGV[3] the loss marker's value the rebuild waited for ('' = none: the ledger is final)
--         A marker that is gone or another means Redis lost its state again since the wait (or
--         another process rebuilt and removed it): the rebuild starts over and waits again.
-- 'rows': ARGV[1] 'rows'  ARGV[2] how long (ms) the staged list and token may wait for the next
--         call  ARGV[3] the coupon's deadline (ms, 0 = never)  ARGV[4..] triples of user, seq,
--         issued_at_ms. Rows are ledger facts: rebuilds running at once may both write them (HSETNX).
-- 'free': ARGV[1] 'free'  ARGV[2] as for 'rows'  ARGV[3..] seqs, ascending
--         They go to this rebuild's own staged list. Two rebuilds at once each build a whole list,
--         and only the one that arms keeps its own, so no seq is ever listed twice.
-- 'arm':  ARGV[1] 'arm'  ARGV[2] total  ARGV[3] opens_ms  ARGV[4] closes_ms (0 = never)
--         ARGV[5] valid_until_ms (0 = never)  ARGV[6] highest seq in the ledger
--         ARGV[7] expire_at_ms: when every key of the coupon expires (0 = never)
--         ARGV[8] retention_ms (REDIS_RETENTION; the issuer uses it when the coupon completes)
--         ARGV[9] rows + free seqs this rebuild wrote ('' for a new coupon: no rebuild, no token)
--         ARGV[10] epoch: a token new to every arming, so that a process holding a view of the
--         coupon (gate/sold-out-view.ts) notices the gate was rebuilt
--         ARGV[11] '1' when an operator paused the coupon (coupons.paused_at), else '0'
--         ARGV[12] the reservation floor (ms, 0 = none): a rebuild after a loss refuses reservations
--         whose time is before its fence's bound, so the issuer never takes one of them for a record
--         appended late (store/fences.ts; gate-reserve.lua)
--         Puts the staged free list in place, writes meta last, and gives every key the deadline.
-- Returns 1 when it wrote; 0 when the gate already existed: it is left untouched, and the caller
-- stops (another process armed it); -1 when Redis lost state during this rebuild: nothing is
-- armed, and the caller starts the rebuild over.
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- This rebuild's staged list is of no use now. UNLINK frees a long list in the background
  -- instead of blocking every other caller.
  redis.call('UNLINK', KEYS[6])
  redis.call('DEL', KEYS[7])
  return 0
end

local function interrupted()
  redis.call('UNLINK', KEYS[6])
  redis.call('DEL', KEYS[7])
  return -1
end

if ARGV[1] == 'begin' then
  if ARGV[3] ~= '' and redis.call('GET', KEYS[8]) ~= ARGV[3] then return interrupted() end
  redis.call('SET', KEYS[7], '0', 'PX', ARGV[2])
  return 1
end

local rebuilding = ARGV[1] ~= 'arm' or ARGV[9] ~= ''
if rebuilding and redis.call('EXISTS', KEYS[7]) == 0 then return interrupted() end

if ARGV[1] == 'rows' then
  for i = 4, #ARGV, 3 do
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 2])
  end
  expire_new(tonumber(ARGV[3]), KEYS[2], KEYS[4])
  -- A rebuild that died leaves its staged list and token to expire; a live one keeps them alive.
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
  redis.call('INCRBY', KEYS[7], math.floor((#ARGV - 3) / 3))
  redis.call('PEXPIRE', KEYS[7], ARGV[2])
  return 1
end

if ARGV[1] == 'free' then
  if #ARGV >= 3 then redis.call('RPUSH', KEYS[6], unpack(ARGV, 3)) end
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
  redis.call('INCRBY', KEYS[7], #ARGV - 2)
  redis.call('PEXPIRE', KEYS[7], ARGV[2])
  return 1
end

-- 'arm'. The staged list (or none: no gaps) is the whole truth about free seqs, once every call
-- of this rebuild is known to be in place.
if rebuilding then
  if tonumber(redis.call('GET', KEYS[7])) ~= tonumber(ARGV[9]) then return interrupted() end
  redis.call('DEL', KEYS[7])
end
redis.call('UNLINK', KEYS[5])
if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[5]) end
redis.call('SET', KEYS[3], ARGV[6])
redis.call('HSET', KEYS[1], 'total', ARGV[2], 'opens_ms', ARGV[3], 'closes_ms', ARGV[4], 'valid_until_ms', ARGV[5],
  'expire_at_ms', ARGV[7], 'retention_ms', ARGV[8], 'epoch', ARGV[10])
if ARGV[11] == '1' then redis.call('HSET', KEYS[1], 'paused', '1') end
if (tonumber(ARGV[12]) or 0) > 0 then redis.call('HSET', KEYS[1], 'reserve_floor_ms', ARGV[12]) end
-- Every key gets the same deadline, including keys written before the gate existed (redemption
-- state restored from the ledger, the staged list's own short expiry), or none at all.
local deadline = tonumber(ARGV[7])
for i = 9, #KEYS do
  if deadline > 0 then redis.call('PEXPIREAT', KEYS[i], deadline) else redis.call('PERSIST', KEYS[i]) end
end
return 1
