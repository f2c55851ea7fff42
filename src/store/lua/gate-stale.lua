-- The recovery loop's view of a coupon's reservations whose publish never finished: each stale
-- pending entry with the seq its reservation holds, read in one step, so a seq is always paired
-- with its own reservation's time (a release and a new reservation of the same user in between
-- would otherwise pair the new seq with the old time). An entry whose user holds no seq is not a
-- reservation (nothing leaves one; a partial loss could): it is dropped here, in the same step, so
-- a newer reservation of that user can never be dropped in its place.
-- KEYS[1] pending  KEYS[2] winners
-- ARGV[1] cutoff (ms): entries reserved at or before it  ARGV[2] at most this many entries
-- Returns {user, reserved at (ms), seq, ...} for the stale entries that hold a seq.
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #stale, 2 do
  local user = stale[i]
  local seq = redis.call('HGET', KEYS[2], user)
  if seq then
    out[#out + 1] = user
    out[#out + 1] = stale[i + 1]
    out[#out + 1] = seq
  else
    redis.call('ZREM', KEYS[1], user)
  end
end
return out
