-- Remove callers whose owning worker stopped renewing their lease (it died); counted as lost.
-- An agent already assigned such a caller may still be bridged to it in the engine, so the
-- agent goes away (reason call_lost) rather than straight back to available: never two calls.
-- ARGV: prefix, now_ms, limit -> list of removed call ids
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)
for _, c in ipairs(dead) do
  local ck = ckey(c)
  if redis.call('HGET', ck, 'state') == 'assigned' then
    local a = redis.call('HGET', ck, 'agent')
    if a and redis.call('HGET', akey(a), 'call') == c then
      redis.call('HDEL', akey(a), 'call', 'call_queue')
      set_state(a, 'away', now, 'call_lost')
    end
  end
  if not leave(c, 'lost', now) then redis.call('ZREM', P .. 'leases', c) end
end
return dead
