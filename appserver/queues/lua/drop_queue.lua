-- A queue was deleted in PostgreSQL: stop matching it (waiting callers stay until they leave).
-- ARGV: prefix, queue
local q = ARGV[2]
for _, a in ipairs(redis.call('HKEYS', qkey(q, 'members'))) do
  redis.call('SREM', akey(a) .. ':queues', q)
end
redis.call('DEL', qkey(q, 'conf'), qkey(q, 'members'), qkey(q, 'idle'), qkey(q, 'rr'))
redis.call('SREM', P .. 'queues', q)
return 1
