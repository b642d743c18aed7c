-- A supervisor moves a waiting caller to another queue and/or sets their priority. The
-- caller keeps their join time (so their wait, and their place among callers of the same
-- priority); offers ringing for them are withdrawn; the worker that owns the call is told,
-- so it plays the new queue's music and announcements.
-- ARGV: prefix, call, queue ('' keeps it), priority (-1 keeps it), now_ms
-- -> {'ok', old_queue, new_queue, old_priority, new_priority} | {'err', reason}
-- reason: no_entry | connected (an agent has the caller) | no_such_queue
local c, q2, prio, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = ckey(c)
local call = hgetall(ck)
if not call['state'] then return {'err', 'no_entry'} end
if call['state'] == 'assigned' then return {'err', 'connected'} end
local q1, p1 = call['queue'], num(call['priority'], 0)
if q2 == '' then q2 = q1 end
if prio < 0 then prio = p1 end
if redis.call('EXISTS', qkey(q2, 'conf')) == 0 then return {'err', 'no_such_queue'} end
if q1 == q2 and p1 == prio then return {'ok', q1, q2, p1, prio} end
for _, a in ipairs(redis.call('SMEMBERS', ck .. ':offered')) do
  release_offer(c, a, 'moved', now)
end
local score = (100 - prio) * 1e13 + num(call['joined'], now)
redis.call('ZREM', qkey(q1, 'waiting'), c)
redis.call('ZADD', qkey(q2, 'waiting'), score, c)
redis.call('HSET', ck, 'queue', q2, 'priority', prio, 'score', score, 'state', 'waiting')
if q1 ~= q2 then
  redis.call('HINCRBY', qkey(q1, 'stats'), 'moved', 1)
  count_interval(q1, now, 'moved', 1)
  redis.call('HINCRBY', qkey(q2, 'stats'), 'joined', 1)
  count_interval(q2, now, 'joined', 1)
  notify_queue(q2)
end
notify_queue(q1)
push_owner(c, {type = 'moved', call = c, queue = q2, priority = prio})
return {'ok', q1, q2, p1, prio}
