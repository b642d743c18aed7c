-- Publish one queue's definition and members from PostgreSQL.
-- ARGV: prefix, queue, conf_json (flat object), members_json {agent: "tier:penalty"}
local q, conf, members = ARGV[2], cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local ck = qkey(q, 'conf')
redis.call('DEL', ck)
for f, v in pairs(conf) do redis.call('HSET', ck, f, tostring(v)) end
redis.call('SADD', P .. 'queues', q)
local mk = qkey(q, 'members')
for _, a in ipairs(redis.call('HKEYS', mk)) do
  if members[a] == nil then
    redis.call('HDEL', mk, a)
    redis.call('SREM', akey(a) .. ':queues', q)
    redis.call('ZREM', qkey(q, 'idle'), a)
  end
end
for a, tp in pairs(members) do
  redis.call('HSET', mk, a, tp)
  redis.call('SADD', akey(a) .. ':queues', q)
  local k = akey(a)
  if redis.call('HGET', k, 'state') == 'available' then
    redis.call('ZADD', qkey(q, 'idle'), redis.call('HGET', k, 'idle_since') or 0, a)
  end
end
return 1
