-- Publish one agent's definition. ARGV: prefix, agent, kind, extension, skills_json,
-- enabled (1|0), display_name, now_ms. A disabled agent is logged out unless on a call.
local a, now = ARGV[2], tonumber(ARGV[8])
local k = akey(a)
redis.call('HSET', k, 'kind', ARGV[3], 'extension', ARGV[4], 'skills', ARGV[5],
           'enabled', ARGV[6], 'display_name', ARGV[7])
redis.call('SADD', P .. 'agents', a)
local state = redis.call('HGET', k, 'state')
if not state then
  redis.call('HSET', k, 'state', 'logged_out', 'since', now, 'no_answer', 0, 'calls', 0)
elseif ARGV[6] == '0' and state ~= 'on_call' and state ~= 'logged_out' then
  local offer = redis.call('HGET', k, 'offer')
  if offer then release_offer(offer, a, 'logout', now) end
  set_state(a, 'logged_out', now, 'disabled')
end
return 1
