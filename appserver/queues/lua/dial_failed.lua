-- The caller's worker could not connect the assigned agent: the caller goes back to its
-- place in line, the agent's no-answer counter counts it. now_ms is when the worker saw the
-- dial fail: a repeat of this write (its reply was lost) leaves a later assignment alone.
-- ARGV: prefix, call, agent, now_ms -> 1 | 0
local c, a, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local ck = ckey(c)
local call = hgetall(ck)
if call['state'] ~= 'assigned' or call['agent'] ~= a or num(call['accepted'], 0) > now then
  return 0
end
redis.call('HSET', ck, 'state', 'waiting')
redis.call('HDEL', ck, 'agent', 'accepted')
redis.call('ZADD', qkey(call['queue'], 'waiting'), call['score'], c)
if redis.call('HGET', akey(a), 'call') == c then
  redis.call('HDEL', akey(a), 'call', 'call_queue')
  no_answer(a, call['queue'], now)
end
return 1
