-- Drops coupons from the index of active coupons (store/active-coupons.ts) that the recovery loop
-- found with neither pending reservations nor outbox entries, unless they were marked active again
-- since: the gate and redemption mark a coupon before a script that can add either, so a coupon
-- whose mark is older than the cutoff had nothing added since well before that check.
-- KEYS[1] the index (gate:active[:<prefix>])
-- ARGV[1] cutoff (ms): only members whose last mark is at or before it go
-- ARGV[2..] coupon ids (one page of the walk at most)
-- Returns how many were dropped.
local cutoff = tonumber(ARGV[1])
local dropped = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= cutoff then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return dropped
