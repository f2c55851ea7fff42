-- The broker acknowledged the user's record: drop it from the pending journal.
-- KEYS[1] pending  ARGV[1] user id
return redis.call('ZREM', KEYS[1], ARGV[1])
