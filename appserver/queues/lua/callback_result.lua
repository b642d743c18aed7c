-- How a worker's call to a callback's customer went. answered: the customer's leg goes to a
-- worker by the dialplan (callback_answered); until it gets there the entry holds a lease,
-- so a leg lost on the way frees the agent (reap). busy / no_answer / failed: the agent is
-- free again (not counted against them) and the callback waits at its place for the queue's
-- retry spacing, or fails after callback_max_attempts.
-- ARGV: prefix, call, outcome, cause, now_ms, lease_ms
-- -> {'answered'} | {'retry', attempts, not_before_ms} | {'failed', attempts} | {'gone'}
local c, outcome, cause, now, lease = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
  tonumber(ARGV[6])
local ck = ckey(c)
local call = hgetall(ck)
if call['state'] ~= 'assigned' or not call['callback'] or call['cb_answered'] then
  return {'gone'}
end
local q = call['queue']
redis.call('ZREM', P .. 'callbacks:due', c)
callback_history(c, 'attempt', now, {outcome = outcome, cause = cause})
if outcome == 'answered' then
  redis.call('HSET', ck, 'cb_answered', now)
  redis.call('ZADD', P .. 'leases', now + lease, c)
  return {'answered'}
end
local a = call['agent']
if a and redis.call('HGET', akey(a), 'call') == c then
  redis.call('HDEL', akey(a), 'call', 'call_queue')
  set_state(a, 'available', now, '', redis.call('HGET', akey(a), 'idle_since'))
  notify_agent(a, 'callback_failed', {call = c, outcome = outcome})
end
local conf = hgetall(qkey(q, 'conf'))
local attempts = num(call['cb_attempts'], 1)
if attempts < num(conf['callback_max_attempts'], 3) then
  local not_before = now + num(conf['callback_retry_seconds'], 300) * 1000
  redis.call('HSET', ck, 'state', 'waiting', 'cb_not_before', not_before)
  redis.call('HDEL', ck, 'agent', 'accepted', 'cb_dialer')
  redis.call('ZADD', qkey(q, 'waiting'), call['score'], c)
  return {'retry', attempts, not_before}
end
redis.call('HINCRBY', qkey(q, 'stats'), 'callbacks_failed', 1)
callback_history(c, 'failed', now, {outcome = outcome, cause = cause})
drop_call(c)
return {'failed', attempts}
