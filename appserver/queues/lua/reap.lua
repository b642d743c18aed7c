-- Remove callers whose owning worker stopped renewing their lease (it died).
-- A caller already connected to an agent is completed (the engine may still bridge them;
-- the agent goes to wrap-up); any other is counted as lost (abandoned).
-- ARGV: prefix, now_ms, limit -> list of removed call ids
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)
for _, c in ipairs(dead) do
  local state = redis.call('HGET', ckey(c), 'state')
  if state == 'assigned' then
    complete(c, now)
  elseif not leave(c, 'lost', now) then
    redis.call('ZREM', P .. 'leases', c)
  end
end
return dead
