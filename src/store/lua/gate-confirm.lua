-- The broker acknowledged the user's record: drop it from the pending journal, but only the entry
-- of this reservation (its reserve time), never a later reservation of the same user.
-- KEYS[1] pending  ARGV[1] user id  ARGV[2] reserve time (ms) of the reservation published
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
