-- The broker acknowledged users' records: drop each from the pending journal, but only the entry
-- of the reservation that record carried: its reserve time and its seq. A later reservation of the
-- same user (after a release, possibly in the same millisecond, possibly of another seq) stays, or
-- its failed publish would find no entry and answer OK for a record nobody published.
-- KEYS[1] pending  KEYS[2] winners
-- ARGV: one or more triples, each: user id, reserve time (ms) of the reservation published, its seq
-- Returns, per triple in order, 1 when the entry was removed, 0 when it was not this reservation's
-- (or already gone).
local out = {}
for i = 1, #ARGV, 3 do
  local user = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) == tonumber(ARGV[i + 1]) and redis.call('HGET', KEYS[2], user) == ARGV[i + 2] then
    out[#out + 1] = redis.call('ZREM', KEYS[1], user)
  else
    out[#out + 1] = 0
  end
end
return out
