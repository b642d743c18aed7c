-- Remove callers whose owning worker stopped renewing their lease (it died); counted as lost
-- (see reap_call).
-- ARGV: prefix, now_ms, limit -> list of removed call ids
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)
for _, c in ipairs(dead) do reap_call(c, now) end
return dead
