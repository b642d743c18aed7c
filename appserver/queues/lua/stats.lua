-- Live figures for one queue. ARGV: prefix, queue, now_ms
-- -> {waiting, longest_wait_ms, counters_json, agent_calls_json, agent_states_json}
local q, now = ARGV[2], tonumber(ARGV[3])
local entries = redis.call('ZRANGE', qkey(q, 'waiting'), 0, -1, 'WITHSCORES')
local longest = 0
for i = 2, #entries, 2 do
  local joined = tonumber(entries[i]) % 1e13
  if now - joined > longest then longest = now - joined end
end
local states = {}
for _, a in ipairs(redis.call('HKEYS', qkey(q, 'members'))) do
  local s = redis.call('HGET', akey(a), 'state') or 'logged_out'
  states[s] = (states[s] or 0) + 1
end
local counters = hgetall(qkey(q, 'stats'))
local calls = hgetall(qkey(q, 'agent_calls'))
local function enc(t) if next(t) == nil then return '{}' end return cjson.encode(t) end
return {#entries / 2, longest, enc(counters), enc(calls), enc(states)}
