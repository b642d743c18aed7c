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
local out, cache = {}, {}
for _, c in ipairs(redis.call('SMEMBERS', P .. 'worker:' .. owner .. ':calls')) do
  local ck = ckey(c)
  local q = redis.call('HGET', ck, 'queue')
  if q then
    redis.call('ZADD', P .. 'leases', now + lease, c)
    if cache[q] == nil then
      cache[q] = {staffed(q), num(redis.call('HGET', qkey(q, 'stats'), 'ewma_handle_ms'), 0)}
    end
    local rank = redis.call('ZRANK', qkey(q, 'waiting'), c)
    out[#out + 1] = c; out[#out + 1] = q
    out[#out + 1] = redis.call('HGET', ck, 'state')
    out[#out + 1] = rank and (rank + 1) or 0
    out[#out + 1] = cache[q][1]; out[#out + 1] = cache[q][2]
  else
    redis.call('SREM', P .. 'worker:' .. owner .. ':calls', c)
  end
end
return out
