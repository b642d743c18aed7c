-- Live figures for one queue. ARGV: prefix, queue, now_ms
-- -> {waiting, longest_wait_ms, counters_json, agent_calls_json, agent_states_json,
--     callbacks_waiting, callbacks_dialing, callback_estimate_ms}
-- Callers on the line and callbacks (no caller on the line) are counted apart;
-- callback_estimate_ms: when the next waiting callback should be made, from its place in
-- line (callers ahead served in parallel by the staffed agents) and its retry spacing.
local q, now = ARGV[2], tonumber(ARGV[3])
local entries = redis.call('ZRANGE', qkey(q, 'waiting'), 0, -1, 'WITHSCORES')
local callbacks = {}
for _, c in ipairs(redis.call('SMEMBERS', qkey(q, 'callbacks'))) do callbacks[c] = true end
local longest, callers, cb_waiting, cb_first = 0, 0, 0, nil
for i = 1, #entries, 2 do
  local c = entries[i]
  if callbacks[c] then
    cb_waiting = cb_waiting + 1
    if cb_first == nil then cb_first = {(i + 1) / 2, c} end
  else
    callers = callers + 1
    local joined = tonumber(entries[i + 1]) % 1e13
    if now - joined > longest then longest = now - joined end
  end
end
local states = {}
for _, a in ipairs(redis.call('HKEYS', qkey(q, 'members'))) do
  local s = redis.call('HGET', akey(a), 'state') or 'logged_out'
  states[s] = (states[s] or 0) + 1
end
local counters = hgetall(qkey(q, 'stats'))
local estimate = 0
if cb_first then
  local n = (states['available'] or 0) + (states['offered'] or 0) + (states['on_call'] or 0)
    + (states['wrap_up'] or 0)
  local handle = num(counters['ewma_handle_ms'], 0)
  estimate = math.floor((cb_first[1] - 1) * handle / math.max(1, n))
  local not_before = num(redis.call('HGET', ckey(cb_first[2]), 'cb_not_before'), 0) - now
  if not_before > estimate then estimate = not_before end
end
local calls = hgetall(qkey(q, 'agent_calls'))
local function enc(t) if next(t) == nil then return '{}' end return cjson.encode(t) end
return {callers, longest, enc(counters), enc(calls), enc(states), cb_waiting,
        redis.call('SCARD', qkey(q, 'callbacks')) - cb_waiting, estimate}
