-- ARGV: prefix, agent, call, now_ms -> {'ok', queue, target, kind} | {'err', reason}
-- reason: not_offered | taken (another agent won it) | caller_left
local a, c, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local k = akey(a)
if redis.call('HGET', k, 'offer') ~= c or redis.call('HGET', k, 'state') ~= 'offered' then
  local winner = redis.call('HGET', ckey(c), 'agent')
  if winner and winner ~= a then return {'err', 'taken'} end
  return {'err', 'not_offered'}
end
local state = redis.call('HGET', ckey(c), 'state')
if state ~= 'offered' then
  -- Another agent won this ring-all call first, or the caller is gone: withdraw the offer,
  -- this agent is free again.
  local reason = state and 'taken' or 'caller_left'
  release_offer(c, a, reason, now)
  return {'err', reason}
end
local r = assign(c, a, now)
return {'ok', r[1], r[2], r[3]}
