-- A coupon's state is missing from Redis (it restarted, or a failover dropped writes). Records when
-- the loss was first noticed, in Redis's own clock and with SET NX, so every process waits for the
-- same moment before rebuilding the state from the ledger (store/loss-guard.ts).
-- KEYS[1] the key whose absence means the state is lost (the gate's meta, or redeem-loaded)
-- KEYS[2] the marker for that state (coupon:{id}:rebuild-after or coupon:{id}:redeem-load-after)
-- ARGV[1] settle (ms): how long after the loss a publish accepted before it may still land
-- ARGV[2] the marker's time to live (ms), so a marker left by a process that died mid-rebuild
--         cannot stand for a later loss; an expired marker only makes the next rebuild wait longer
-- Returns {'PRESENT'} when the state is there (another process rebuilt it meanwhile), else
-- {'LOST', rebuild_after_ms, now_ms}, both in Redis server time.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'PRESENT'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], string.format('%.0f', now + tonumber(ARGV[1])), 'NX', 'PX', ARGV[2])
return {'LOST', redis.call('GET', KEYS[2]), string.format('%.0f', now)}
