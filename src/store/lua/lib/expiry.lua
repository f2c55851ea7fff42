-- Retention (store/keys.ts, "Retention"): every key of a coupon expires at one moment, so no key
-- outlives another (a "redeem-loaded" flag that outlived the redemption state it vouches for would
-- let a second order redeem the coupon). Loaded in front of the scripts that create keys
-- (src/store/scripts.ts).

-- The coupon's deadline (ms since the epoch, 0 = never): meta's expire_at_ms while the gate is
-- armed; without a gate, the one the caller computed from the ledger (`fallback`, '' = none).
local function coupon_deadline(meta, fallback)
  local at = redis.call('HGET', meta, 'expire_at_ms')
  if at then return tonumber(at) end
  -- Armed before retention existed: such a coupon never expires until it is armed again.
  if redis.call('EXISTS', meta) == 1 then return 0 end
  return tonumber(fallback or '') or 0
end

-- Gives the keys that have no expiry yet (created by this call) the coupon's deadline. A deadline
-- already past deletes them at once, which is what the coupon's other keys did at that moment.
local function expire_new(deadline, ...)
  if deadline <= 0 then return end
  for _, key in ipairs({...}) do
    if redis.call('PTTL', key) == -1 then redis.call('PEXPIREAT', key, deadline) end
  end
end
