-- A worker's periodic heartbeat: extend the leases of its callers, expire unanswered offers,
-- end wrap-ups, and report each caller's position.
-- ARGV: prefix, owner, now_ms, lease_ms
-- -> flat list of {call, queue, state, position, staffed, ewma_handle_ms}
local owner, now, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
promote_wrapups(now)
local due = redis.call('ZRANGEBYSCORE', P .. 'offers', '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(due) do
  local c, a = string.match(m, '^(.*)|([^|]*)$')
  release_offer(c, a, 'no_answer', now)
end
local out, cache, lease_args = {}, {}, {}
local wkey = P .. 'worker:' .. owner .. ':calls'
for _, c in ipairs(redis.call('SMEMBERS', wkey)) do
  local h = redis.call('HMGET', ckey(c), 'queue', 'state')
  local q = h[1]
  if q then
    lease_args[#lease_args + 1] = now + lease; lease_args[#lease_args + 1] = c
    if #lease_args >= 1000 then
      redis.call('ZADD', P .. 'leases', unpack(lease_args)); lease_args = {}
    end
    if cache[q] == nil then
      cache[q] = {staffed(q), num(redis.call('HGET', qkey(q, 'stats'), 'ewma_handle_ms'), 0)}
    end
    local rank = false
    if h[2] ~= 'assigned' then rank = redis.call('ZRANK', qkey(q, 'waiting'), c) end
    out[#out + 1] = c; out[#out + 1] = q; out[#out + 1] = h[2]
    out[#out + 1] = rank and (rank + 1) or 0
    out[#out + 1] = cache[q][1]; out[#out + 1] = cache[q][2]
  else
    redis.call('SREM', wkey, c)
  end
end
if #lease_args > 0 then redis.call('ZADD', P .. 'leases', unpack(lease_args)) end
return out
