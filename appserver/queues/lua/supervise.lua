-- A supervisor listens to, whispers to or barges in on a call connected to an agent, changes
-- mode, or stops. One supervisor per call at a time. The request goes to the inbox of the
-- worker owning the call; the agent's sockets are told at once (mode 'off' when it stops).
-- ARGV: prefix, call, supervisor, op (start | change | stop), mode (listen | whisper | barge)
-- -> {'ok', agent} | {'err', reason}
local c, s, op, mode = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ck = ckey(c)
local a = redis.call('HGET', ck, 'agent')
if redis.call('HGET', ck, 'state') ~= 'assigned' or not a
    or redis.call('HGET', akey(a), 'state') ~= 'on_call'
    or redis.call('HGET', akey(a), 'call') ~= c then
  return {'err', 'not_connected'}
end
local current = redis.call('HGET', ck, 'supervisor')
if op == 'start' then
  if current and current ~= s then return {'err', 'supervised'} end
elseif current ~= s then
  return {'err', 'not_supervising'}
end
if op == 'stop' then
  redis.call('HDEL', ck, 'supervisor', 'supervise_mode')
  notify_agent(a, 'supervise', {call = c, supervisor = s, mode = 'off'})
  push_owner(c, {type = 'supervise', call = c, supervisor = s, mode = 'stop', op = op})
else
  redis.call('HSET', ck, 'supervisor', s, 'supervise_mode', mode)
  notify_agent(a, 'supervise', {call = c, supervisor = s, mode = mode})
  push_owner(c, {type = 'supervise', call = c, supervisor = s, mode = mode, op = op})
end
return {'ok', a}
