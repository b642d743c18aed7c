-- An agent was deleted in PostgreSQL. ARGV: prefix, agent, now_ms -> 1 | {'err', 'on_call'}
local a, now = ARGV[2], tonumber(ARGV[3])
local k = akey(a)
if redis.call('HGET', k, 'state') == 'on_call' then return {'err', 'on_call'} end
local offer = redis.call('HGET', k, 'offer')
if offer then release_offer(offer, a, 'logout', now) end
for _, q in ipairs(redis.call('SMEMBERS', k .. ':queues')) do
  redis.call('HDEL', qkey(q, 'members'), a)
  redis.call('ZREM', qkey(q, 'idle'), a)
end
redis.call('ZREM', P .. 'wrapup', a)
redis.call('DEL', k, k .. ':queues')
redis.call('SREM', P .. 'agents', a)
return 1
