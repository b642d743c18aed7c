-- Shared helpers, prepended to every queue script. ARGV[1] is the key prefix
-- (e.g. "{callyard:q}:"); timestamps are passed in as milliseconds, never read from TIME.
-- Every key is P .. something: the prefix's hash tag keeps them all in one Cluster slot,
-- the slot of KEYS[1] (declared so cluster clients route the script; not read here).
local P = ARGV[1]
local STATS_CHANNEL = 'callyard:q:stats'
local AGENTS_CHANNEL = 'callyard:q:agents'
local CALLS_CHANNEL = 'callyard:q:calls'
-- Figures per queue and 5-minute interval (the wallboard's "today"), kept two days.
local INTERVAL_MS = 300000
local INTERVAL_TTL = 172800

local function qkey(q, part) return P .. 'queue:' .. q .. ':' .. part end
local function akey(a) return P .. 'agent:' .. a end
local function ckey(c) return P .. 'call:' .. c end

-- Add to the counters of queue q's interval holding now: pairs of field, increment.
local function count_interval(q, now, ...)
  local k = qkey(q, 'i:' .. math.floor(now / INTERVAL_MS))
  local args = {...}
  for i = 1, #args, 2 do redis.call('HINCRBY', k, args[i], args[i + 1]) end
  redis.call('EXPIRE', k, INTERVAL_TTL)
end

-- Someone joined, left or moved in queue q (the wallboard refreshes).
local function notify_queue(q)
  redis.call('PUBLISH', CALLS_CHANNEL, q)
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function num(v, default)
  local n = tonumber(v)
  if n == nil then return default end
  return n
end

local function notify_agent(a, kind, fields)
  fields = fields or {}
  fields['type'] = kind
  fields['agent'] = a
  redis.call('PUBLISH', AGENTS_CHANNEL, cjson.encode(fields))
end

-- Agent availability is mirrored into one "idle" sorted set per queue the agent serves
-- (score: when the agent became idle), so matching never scans busy agents.
local function set_state(a, state, now, reason, idle_since)
  local k = akey(a)
  redis.call('HSET', k, 'state', state, 'since', now, 'reason', reason or '')
  local queues = redis.call('SMEMBERS', k .. ':queues')
  if state == 'available' then
    local since = idle_since or now
    redis.call('HSET', k, 'idle_since', since)
    for _, q in ipairs(queues) do redis.call('ZADD', qkey(q, 'idle'), since, a) end
  else
    for _, q in ipairs(queues) do redis.call('ZREM', qkey(q, 'idle'), a) end
  end
  if state ~= 'wrap_up' then redis.call('ZREM', P .. 'wrapup', a) end
  notify_agent(a, 'state', {state = state, reason = reason or ''})
end

-- An agent counts as staffing a queue unless logged out, on break or away.
local function staffed(q)
  local n = 0
  for _, a in ipairs(redis.call('HKEYS', qkey(q, 'members'))) do
    local s = redis.call('HGET', akey(a), 'state')
    if s == 'available' or s == 'offered' or s == 'on_call' or s == 'wrap_up' then n = n + 1 end
  end
  return n
end

-- After a call, go to wrap-up for the queue's wrap-up time (0: straight to available),
-- or to the break requested during the call.
local function after_call(a, q, now)
  local k = akey(a)
  redis.call('HDEL', k, 'call', 'call_queue')
  local pending = redis.call('HGET', k, 'pending_break')
  local wrap = num(redis.call('HGET', qkey(q, 'conf'), 'wrapup_seconds'), 0)
  if wrap > 0 then
    local till = now + wrap * 1000
    set_state(a, 'wrap_up', now, '')
    redis.call('HSET', k, 'wrapup_until', till)
    redis.call('ZADD', P .. 'wrapup', till, a)
  elseif pending and pending ~= '' then
    redis.call('HDEL', k, 'pending_break')
    set_state(a, 'break', now, pending)
  else
    set_state(a, 'available', now, '')
  end
end

local function promote_wrapups(now)
  local due = redis.call('ZRANGEBYSCORE', P .. 'wrapup', '-inf', now, 'LIMIT', 0, 1000)
  for _, a in ipairs(due) do
    redis.call('ZREM', P .. 'wrapup', a)
    local k = akey(a)
    if redis.call('HGET', k, 'state') == 'wrap_up' then
      redis.call('HDEL', k, 'wrapup_until')
      local pending = redis.call('HGET', k, 'pending_break')
      if pending and pending ~= '' then
        redis.call('HDEL', k, 'pending_break')
        set_state(a, 'break', now, pending)
      else
        set_state(a, 'available', now, '')
      end
    end
  end
end

local function push_owner(c, msg)
  local owner = redis.call('HGET', ckey(c), 'owner')
  if owner and owner ~= '' then
    local inbox = P .. 'worker:' .. owner .. ':inbox'
    redis.call('RPUSH', inbox, cjson.encode(msg))
    redis.call('EXPIRE', inbox, 3600)  -- a dead worker's inbox does not linger
  end
end

-- Count an unanswered or refused offer; max_no_answer of them in a row sends the agent away.
local function no_answer(a, q, now)
  local k = akey(a)
  local n = redis.call('HINCRBY', k, 'no_answer', 1)
  local max = num(redis.call('HGET', qkey(q, 'conf'), 'max_no_answer'), 0)
  if max > 0 and n >= max then
    redis.call('HSET', k, 'no_answer', 0)
    set_state(a, 'away', now, 'no_answer')
  else
    set_state(a, 'available', now, '')
  end
end

-- Withdraw call c's offer to agent a. reason: no_answer | declined (counted), taken (another
-- agent won a ring-all), caller_left, moved (a supervisor moved the caller), logout, break
-- (not counted).
local function release_offer(c, a, reason, now)
  redis.call('ZREM', P .. 'offers', c .. '|' .. a)
  local k = akey(a)
  local ok = redis.call('HGET', k, 'offer') == c
  local q = redis.call('HGET', k, 'offer_queue') or redis.call('HGET', ckey(c), 'queue')
  if ok then
    redis.call('HDEL', k, 'offer', 'offer_queue')
    if reason == 'no_answer' or reason == 'declined' then
      no_answer(a, q, now)
    elseif reason == 'taken' or reason == 'caller_left' or reason == 'moved' then
      set_state(a, 'available', now, '', redis.call('HGET', k, 'idle_since'))
    end
    notify_agent(a, 'offer_withdrawn', {call = c, reason = reason})
  end
  local ck = ckey(c)
  redis.call('SREM', ck .. ':offered', a)
  if redis.call('HGET', ck, 'state') == 'offered' and redis.call('SCARD', ck .. ':offered') == 0 then
    redis.call('HSET', ck, 'state', 'waiting')
  end
  return ok
end

-- Agent a takes call c: c leaves the waiting line, the owner's worker is told to connect.
local function assign(c, a, now)
  local ck = ckey(c)
  local call = hgetall(ck)
  local q = call['queue']
  redis.call('HSET', ck, 'state', 'assigned', 'agent', a, 'accepted', now)
  redis.call('ZREM', qkey(q, 'waiting'), c)
  redis.call('ZREM', P .. 'offers', c .. '|' .. a)
  local k = akey(a)
  redis.call('HDEL', k, 'offer', 'offer_queue')
  redis.call('HSET', k, 'call', c, 'call_queue', q)
  -- A browser agent answered the offer by accepting it; a SIP agent is rung only now, so
  -- their count restarts when the call is connected (complete), not here.
  if redis.call('HGET', k, 'kind') ~= 'sip' then redis.call('HSET', k, 'no_answer', 0) end
  set_state(a, 'on_call', now, '')
  for _, other in ipairs(redis.call('SMEMBERS', ck .. ':offered')) do
    if other ~= a then release_offer(c, other, 'taken', now) end
  end
  redis.call('DEL', ck .. ':offered')
  local info = hgetall(k)
  local target = info['extension'] or ''
  if info['kind'] ~= 'sip' or target == '' then target = a end
  -- A callback has no caller on the line: some worker dials the customer (callback_claim).
  if call['callback'] then redis.call('ZADD', P .. 'callbacks:due', now, c) end
  push_owner(c, {type = 'assigned', call = c, queue = q, agent = a,
                 target = target, kind = info['kind'] or 'browser'})
  return {q, target, info['kind'] or 'browser'}
end

local function drop_call(c)
  local ck = ckey(c)
  local call = hgetall(ck)
  if call['queue'] then
    redis.call('ZREM', qkey(call['queue'], 'waiting'), c)
    redis.call('SREM', qkey(call['queue'], 'callbacks'), c)
    notify_queue(call['queue'])
  end
  if call['owner'] then redis.call('SREM', P .. 'worker:' .. call['owner'] .. ':calls', c) end
  redis.call('ZREM', P .. 'leases', c)
  redis.call('DEL', ck, ck .. ':offered')
end

-- A call with an agent ended: stats and the agent's wrap-up.
local function complete(c, now)
  local ck = ckey(c)
  local call = hgetall(ck)
  local q, a = call['queue'], call['agent']
  local st = qkey(q, 'stats')
  local joined, accepted = num(call['joined'], now), num(call['accepted'], now)
  local wait, handle = accepted - joined, now - accepted
  local sl = num(redis.call('HGET', qkey(q, 'conf'), 'service_level_seconds'), 20) * 1000
  redis.call('HINCRBY', st, 'answered', 1)
  if wait <= sl then redis.call('HINCRBY', st, 'answered_in_sl', 1) end
  redis.call('HINCRBY', st, 'wait_ms', wait)
  redis.call('HINCRBY', st, 'handle_ms', handle)
  local ewma = num(redis.call('HGET', st, 'ewma_handle_ms'), handle)
  redis.call('HSET', st, 'ewma_handle_ms', math.floor((ewma * 3 + handle) / 4))
  redis.call('HINCRBY', qkey(q, 'agent_calls'), a, 1)
  count_interval(q, now, 'answered', 1, 'answered_in_sl', wait <= sl and 1 or 0,
                 'wait_ms', wait, 'handle_ms', handle, 'calls:' .. a, 1)
  redis.call('HINCRBY', akey(a), 'calls', 1)
  redis.call('HSET', akey(a), 'no_answer', 0)
  if redis.call('HGET', akey(a), 'call') == c then after_call(a, q, now) end
  drop_call(c)
end

-- The caller is gone from the queue without being connected to an agent.
local function leave(c, outcome, now)
  local ck = ckey(c)
  local state = redis.call('HGET', ck, 'state')
  if not state then return false end
  if state == 'assigned' then
    -- Assigned but never connected (the caller left first): the agent is free again.
    local a = redis.call('HGET', ck, 'agent')
    if a and redis.call('HGET', akey(a), 'call') == c then
      redis.call('HDEL', akey(a), 'call', 'call_queue')
      set_state(a, 'available', now, '', redis.call('HGET', akey(a), 'idle_since'))
    end
  end
  for _, a in ipairs(redis.call('SMEMBERS', ck .. ':offered')) do
    release_offer(c, a, 'caller_left', now)
  end
  local q = redis.call('HGET', ck, 'queue')
  local st = qkey(q, 'stats')
  local counter = 'overflowed'
  if outcome == 'abandoned' or outcome == 'lost' then
    counter = 'abandoned'
    if outcome == 'lost' then redis.call('HINCRBY', st, 'lost', 1) end
  elseif outcome == 'left' then
    counter = 'exited'
  elseif outcome == 'ended' then
    counter = 'ended'  -- a supervisor hung up
  end
  redis.call('HINCRBY', st, counter, 1)
  count_interval(q, now, counter, 1)
  drop_call(c)
  return state
end

-- Remove caller c whose worker stopped renewing its lease (it died), counted as lost. An
-- agent already assigned such a caller may still be bridged to it in the engine, so the
-- agent goes away (reason call_lost) rather than straight back to available: never two calls.
local function reap_call(c, now)
  local ck = ckey(c)
  if redis.call('HGET', ck, 'state') == 'assigned' then
    local a = redis.call('HGET', ck, 'agent')
    if a and redis.call('HGET', akey(a), 'call') == c then
      redis.call('HDEL', akey(a), 'call', 'call_queue')
      set_state(a, 'away', now, 'call_lost')
    end
  end
  if not leave(c, 'lost', now) then redis.call('ZREM', P .. 'leases', c) end
end

-- One line of a callback's history (stream read by the API's callback history writer).
local CALLBACK_HISTORY_MAXLEN = 100000
local function callback_history(c, event, now, fields)
  local ck = ckey(c)
  local h = redis.call('HMGET', ck, 'cb_id', 'queue', 'callback', 'cb_number', 'cb_attempts',
                       'agent', 'cb_requested')
  local args = {'callback', h[1] or c, 'event', event, 'at', tostring(now),
                'queue', h[2] or '', 'number', h[3] or h[4] or '', 'attempt', h[5] or '0',
                'agent', h[6] or '', 'requested', h[7] or ''}
  for k, v in pairs(fields or {}) do args[#args + 1] = k; args[#args + 1] = tostring(v) end
  redis.call('XADD', P .. 'callbacks:history', 'MAXLEN', '~', CALLBACK_HISTORY_MAXLEN, '*',
             unpack(args))
end
