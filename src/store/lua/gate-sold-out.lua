-- Whether a coupon's sell-out is final, for the in-process sold-out view (gate/sold-out-view.ts).
-- Final means: every unit has a winner and no publish is in flight (the pending journal is empty),
-- so no release can give a slot back. Only a new arming (a rebuild after a Redis loss: a new epoch)
-- or the keys' expiry can change what the gate answers a user who is not a winner.
-- KEYS[1] meta  KEYS[2] winners  KEYS[3] pending
-- Returns {epoch, final ('1' or '0'), winners, closes_ms, expire_at_ms}, or {} when the gate is not
-- in Redis (never armed here, lost or expired). The epoch returned is the view's signature: the
-- arming's (or last change's) epoch, the last reservation and the count of releases, joined by '#'
-- (gate-scripts.ts soldOutSignature reads the same three fields with one HMGET, for the view's
-- rechecks). Once the sell-out is final, only these can change what the gate answers a non-winner:
-- a change or rebuild writes a new epoch; a slot can only come back by a release; and Redis
-- replication keeps a prefix of the writes, so a failover that lost a reservation shows an older
-- last reservation, and one that lost only a confirm changes no answer until its release.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'total', 'closes_ms', 'expire_at_ms', 'last_reserve', 'releases')
local winners = redis.call('HLEN', KEYS[2])
local final = '0'
-- A gate armed before epochs existed has none: it never gets a view (nothing would notice its rebuild).
if meta[1] and winners >= tonumber(meta[2]) and redis.call('ZCARD', KEYS[3]) == 0 then final = '1' end
local epoch = ''
if meta[1] then epoch = meta[1] .. '#' .. (meta[5] or '') .. '#' .. (meta[6] or '') end
return {epoch, final, winners, meta[3] or '0', meta[4] or '0'}
