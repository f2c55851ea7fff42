-- The issuer takes records before writing them to the ledger. A record whose reservation was
-- released (tombstone matches, user no longer holds that seq) is stale and must not be issued.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] released  KEYS[4] claimed
-- ARGV: pairs of user id, seq
-- Returns one verdict per pair: 'OK' (write it), 'STALE' (drop it), 'OUT_OF_RANGE' (the gate is
-- armed and the seq is not a whole number in 1..total: no gate wrote it, and it can never be issued,
-- so it is dead-lettered, DESIGN.md "Outages versus poison"), 'LOST' (drop it: the gate is
-- armed but does not hold this seq for the user, and there is no tombstone: no reservation, or a
-- different seq. Only a Redis failover that lost the master's last writes leaves that (a release
-- always leaves a tombstone, and a rebuild arms only once the issuer caught up), and the seq may
-- already be another user's, told OK since; the user's live reservation is the one held), or
-- 'UNARMED': the gate is
-- gone (Redis lost its state, tombstones included), so Redis cannot judge the record. The issuer
-- then asks the ledger's copy of the releases (gate_releases) instead, and the ledger's unique
-- (coupon_id, user_id) and (coupon_id, seq) constraints still hold I1 and I2.
local out = {}
local armed = redis.call('EXISTS', KEYS[1]) == 1
-- Arming always writes total (gate-load.lua); without it no range is known, and nothing is judged by it.
local total = armed and tonumber(redis.call('HGET', KEYS[1], 'total') or '')
for i = 1, #ARGV, 2 do
  local user, seq = ARGV[i], ARGV[i + 1]
  local verdict = 'UNARMED'
  local n = tonumber(seq)
  if armed and total and not (n and n >= 1 and n <= total and n == math.floor(n)) then
    verdict = 'OUT_OF_RANGE'
  elseif armed then
    verdict = 'OK'
    local held = redis.call('HGET', KEYS[2], user)
    if held ~= seq and redis.call('SISMEMBER', KEYS[3], user .. '|' .. seq) == 1 then
      verdict = 'STALE'
    elseif held ~= seq then
      verdict = 'LOST'
    else
      redis.call('HSET', KEYS[4], user, seq)
    end
  end
  out[#out + 1] = verdict
end
if armed then expire_new(coupon_deadline(KEYS[1]), KEYS[4]) end
return out
