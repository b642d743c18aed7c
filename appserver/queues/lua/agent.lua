-- Agent-initiated state changes. ARGV: prefix, agent, action, now_ms, reason
-- action: login | logout | available | break | end_call
-- -> {'ok', new_state} | {'pending', state} | {'err', reason}
local a, action, now, reason = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local k = akey(a)
promote_wrapups(now)
local info = hgetall(k)
local state = info['state']
if not state then return {'err', 'no_such_agent'} end
if action == 'login' then
  if info['enabled'] == '0' then return {'err', 'disabled'} end
  if state == 'logged_out' then set_state(a, 'available', now, '') end
  return {'ok', redis.call('HGET', k, 'state')}
end
if state == 'logged_out' then return {'err', 'logged_out'} end
if action == 'end_call' then
  if state ~= 'on_call' then return {'err', 'not_on_call'} end
  local c = info['call']
  if c and redis.call('HGET', ckey(c), 'state') == 'assigned' then
    -- The worker that owns the call ends the agent's leg, whatever else ends it (a LiveKit
    -- room deleted now or later, a SIP phone that stays off hook).
    push_owner(c, {type = 'agent_request', call = c, action = 'hangup', target = ''})
    complete(c, now)
  else
    after_call(a, info['call_queue'] or '', now)
  end
  return {'ok', redis.call('HGET', k, 'state')}
end
if state == 'on_call' then
  if action == 'break' then
    redis.call('HSET', k, 'pending_break', reason ~= '' and reason or 'break')
    return {'pending', 'break'}
  end
  return {'err', 'on_call'}
end
if state == 'offered' and info['offer'] then
  release_offer(info['offer'], a, action == 'available' and 'taken' or action, now)
end
if action == 'logout' then
  redis.call('HDEL', k, 'pending_break', 'wrapup_until')
  set_state(a, 'logged_out', now, '')
elseif action == 'available' then
  redis.call('HDEL', k, 'pending_break', 'wrapup_until')
  redis.call('HSET', k, 'no_answer', 0)
  if redis.call('HGET', k, 'state') ~= 'available' then set_state(a, 'available', now, '') end
elseif action == 'break' then
  redis.call('HDEL', k, 'pending_break', 'wrapup_until')
  set_state(a, 'break', now, reason ~= '' and reason or 'break')
else
  return {'err', 'unknown_action'}
end
return {'ok', redis.call('HGET', k, 'state')}
