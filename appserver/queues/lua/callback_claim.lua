-- A worker claims callbacks an agent accepted, to dial the customers. A claim lasts claim_ms
-- (longer than the ring time): if the worker dies meanwhile, another claims it again then.
-- ARGV: prefix, owner, now_ms, claim_ms, limit
-- -> flat list of {call, queue, number, agent, attempt}
local owner, now, claim, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local due = redis.call('ZRANGEBYSCORE', P .. 'callbacks:due', '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, c in ipairs(due) do
  local ck = ckey(c)
  local call = hgetall(ck)
  if call['state'] ~= 'assigned' or not call['callback'] then
    redis.call('ZREM', P .. 'callbacks:due', c)
  else
    redis.call('ZADD', P .. 'callbacks:due', now + claim, c)
    local attempt = redis.call('HINCRBY', ck, 'cb_attempts', 1)
    redis.call('HSET', ck, 'cb_dialer', owner)
    callback_history(c, 'dialing', now, {worker = owner})
    out[#out + 1] = c; out[#out + 1] = call['queue']; out[#out + 1] = call['callback']
    out[#out + 1] = call['agent'] or ''; out[#out + 1] = attempt
  end
end
return out
