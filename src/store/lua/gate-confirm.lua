-- The broker acknowledged the user's record: drop it from the pending journal, but only the entry
-- of the reservation that record carried: its reserve time and its seq. A later reservation of the
-- same user (after a release, possibly in the same millisecond, possibly of another seq) stays, or
-- its failed publish would find no entry and answer OK for a record nobody published.
-- KEYS[1] pending  KEYS[2] winners
-- ARGV[1] user id  ARGV[2] reserve time (ms) of the reservation published  ARGV[3] its seq
-- Returns 1 when the entry was removed, 0 when it was not this reservation's (or already gone).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
