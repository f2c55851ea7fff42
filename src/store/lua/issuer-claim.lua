-- The issuer takes records before writing them to the ledger. A record whose reservation was
-- released (tombstone matches, user no longer holds that seq) is stale and must not be issued.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] released  KEYS[4] claimed
-- ARGV: pairs of user id, seq
-- Returns one verdict per pair: 'OK' (write it) or 'STALE' (drop it).
-- When the gate is gone (Redis lost its state) every record is 'OK': the ledger's unique
-- (coupon_id, user_id) and (coupon_id, seq) constraints still hold I1 and I2.
local out = {}
local armed = redis.call('EXISTS', KEYS[1]) == 1
for i = 1, #ARGV, 2 do
  local user, seq = ARGV[i], ARGV[i + 1]
  local verdict = 'OK'
  if armed then
    local held = redis.call('HGET', KEYS[2], user)
    if held ~= seq and redis.call('SISMEMBER', KEYS[3], user .. '|' .. seq) == 1 then
      verdict = 'STALE'
    else
      redis.call('HSET', KEYS[4], user, seq)
    end
  end
  out[#out + 1] = verdict
end
return out
