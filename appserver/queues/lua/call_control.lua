-- An agent on a call asks the worker that owns it to hold, resume or blind-transfer the
-- caller. The request goes to that worker's inbox; the agent's sockets are told at once.
-- ARGV: prefix, agent, action (hold | unhold | transfer | record), target, now_ms
-- target: transfer "extension:<number>" or "queue:<name>"; record start|pause|resume|stop
-- -> {'ok', call} | {'err', reason}
local a, action, target = ARGV[2], ARGV[3], ARGV[4]
local k = akey(a)
local state = redis.call('HGET', k, 'state')
if not state then return {'err', 'no_such_agent'} end
local c = redis.call('HGET', k, 'call')
if state ~= 'on_call' or not c then return {'err', 'not_on_call'} end
local ck = ckey(c)
if redis.call('HGET', ck, 'state') ~= 'assigned' or redis.call('HGET', ck, 'agent') ~= a then
  return {'err', 'not_on_call'}
end
if redis.call('HGET', ck, 'transfer') then return {'err', 'transferring'} end
if action == 'hold' or action == 'unhold' then
  local held = (action == 'hold') and '1' or '0'
  if (redis.call('HGET', ck, 'held') or '0') == held then return {'ok', c} end
  redis.call('HSET', ck, 'held', held)
  notify_agent(a, 'hold', {call = c, held = (held == '1')})
elseif action == 'transfer' then
  local queue = string.match(target, '^queue:(.+)$')
  if queue and redis.call('EXISTS', qkey(queue, 'conf')) == 0 then
    return {'err', 'no_such_queue'}
  end
  redis.call('HSET', ck, 'transfer', target)
  notify_agent(a, 'transfer', {call = c, target = target})
elseif action == 'record' then
  notify_agent(a, 'record', {call = c, operation = target})
else
  return {'err', 'bad_action'}
end
push_owner(c, {type = 'agent_request', call = c, action = action, target = target})
return {'ok', c}
