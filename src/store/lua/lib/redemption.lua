-- Shared by redeem.lua and cancel-redemption.lua, which are loaded with this file in front of them
-- (src/store/scripts.ts). Both use the same KEYS: [2] winners [3] issued [4] redeem [6] outbox
-- [7] redeem-loaded.
-- The redeem value is "<R|C>|<order id>|<version>|<at ms>"; version grows by one per change.
-- Outbox members are "<user>\n<redeem value>"; user ids hold no control characters, so the range
-- ["<user>\n", "<user>\v") holds exactly this user's.

-- The user's seq, issued_at, current redeem value, and that value parsed (state, order, version).
local function redemption_state(user)
  local seq = redis.call('HGET', KEYS[2], user) or ''
  local issued = redis.call('HGET', KEYS[3], user) or ''
  local current = redis.call('HGET', KEYS[4], user) or ''
  -- Greedy (.*) keeps order ids that contain '|' whole: version and time are digits only.
  local state, held, version = string.match(current, '^([RC])|(.*)|(%d+)|%d+$')
  return seq, issued, current, state, held, tonumber(version or '0')
end

-- {status, seq, issued_at, value, the user's outbox members...}
local function reply_with_outbox(status, user, seq, issued, value)
  local out = {status, seq, issued, value}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[6], '[' .. user .. '\n', '(' .. user .. '\011')) do
    out[#out + 1] = m
  end
  return out
end

-- Writes a change: the new value, journaled in the outbox for publishing.
local function journal(user, value)
  redis.call('HSET', KEYS[4], user, value)
  redis.call('ZADD', KEYS[6], 0, user .. '\n' .. value)
end

-- A repeat (UNCHANGED) still writes, so that the caller's WAIT (REDIS_WAIT_REPLICAS) covers the
-- change it reports: WAIT waits for this connection's last write, and the change may be another
-- process's, written earlier on the master's replication stream and not yet on any replica. The
-- same as the gate's repeat (gate-reserve.lua). KEYS[7] (redeem-loaded) exists whenever a
-- repeat is answered; its value and expiry stay as they are.
local function repeat_write()
  redis.call('SET', KEYS[7], redis.call('GET', KEYS[7]), 'KEEPTTL')
end

-- KEYS[7] (redeem-loaded) holds the change floor of the load that wrote it ("1" for a coupon
-- created on this Redis, restore-redemption.lua 'M'): a change whose time is before it is refused
-- (CLOCK_BEHIND), so the ledger can drop a change of the lost Redis that reached Kafka after the
-- load's fence (src/redemption/ledger.ts). nil when the state is not loaded.
local function change_floor()
  local loaded = redis.call('GET', KEYS[7])
  if not loaded then return nil end
  return tonumber(loaded) or 0
end
