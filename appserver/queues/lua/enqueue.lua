-- ARGV: prefix, queue, call, priority(0..99), now_ms, owner, lease_ms, caller, skills_json,
--       menu_path (the IVR path the caller took, for the agent's offer)
-- -> {'ok', position, staffed} | {'full'} | {'empty'} | {'err', reason}
local q, c, prio, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local owner, lease = ARGV[6], tonumber(ARGV[7])
local conf = hgetall(qkey(q, 'conf'))
if not conf['strategy'] then return {'err', 'no_such_queue'} end
local existing = redis.call('HMGET', ckey(c), 'owner', 'queue', 'state')
if existing[1] then
  -- The same join again (its first reply was lost): the same answer, nothing counted twice.
  if existing[1] == owner and existing[2] == q then
    local rank = existing[3] ~= 'assigned' and redis.call('ZRANK', qkey(q, 'waiting'), c)
    return {'ok', rank and (rank + 1) or 0, staffed(q)}
  end
  return {'err', 'duplicate_call'}
end
promote_wrapups(now)
local waiting = qkey(q, 'waiting')
local max_len = num(conf['max_length'], 0)
if max_len > 0 and redis.call('ZCARD', waiting) >= max_len then
  redis.call('HINCRBY', qkey(q, 'stats'), 'overflowed', 1)
  count_interval(q, now, 'overflowed', 1)
  return {'full'}
end
if conf['join_when_empty'] == '0' and staffed(q) == 0 then
  redis.call('HINCRBY', qkey(q, 'stats'), 'overflowed', 1)
  count_interval(q, now, 'overflowed', 1)
  return {'empty'}
end
-- Priority first (higher first), then arrival: FIFO within a priority. The score is the join
-- time, but never at or before the last caller's of the same priority (same millisecond, or a
-- worker's clock behind): equal scores would be ordered by call id.
local band = (100 - prio) * 1e13
local score = band + now
local last = redis.call('ZREVRANGEBYSCORE', waiting, band + 1e13 - 1, band, 'WITHSCORES',
                        'LIMIT', 0, 1)
if last[2] and tonumber(last[2]) >= score then score = tonumber(last[2]) + 1 end
redis.call('HSET', ckey(c), 'queue', q, 'priority', prio, 'joined', now, 'score', score,
           'owner', owner, 'state', 'waiting', 'caller', ARGV[8], 'skills', ARGV[9],
           'menu_path', ARGV[10])
redis.call('ZADD', waiting, score, c)
redis.call('ZADD', P .. 'leases', now + lease, c)
redis.call('SADD', P .. 'worker:' .. owner .. ':calls', c)
redis.call('HINCRBY', qkey(q, 'stats'), 'joined', 1)
count_interval(q, now, 'joined', 1)
notify_queue(q)
return {'ok', redis.call('ZRANK', waiting, c) + 1, staffed(q)}
