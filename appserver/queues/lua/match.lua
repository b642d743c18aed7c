-- Offer waiting callers of one queue to free agents by the queue's strategy.
-- ARGV: prefix, queue, now_ms, rand (0..1), scan_limit
-- -> flat list of {call, agent, mode} where mode is 'offer' (waits for accept) or 'assigned'
local q, now, rand, scan = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
promote_wrapups(now)
local result = {}
local idle = redis.call('ZRANGE', qkey(q, 'idle'), 0, -1, 'WITHSCORES')
if #idle == 0 then return result end
local conf = hgetall(qkey(q, 'conf'))
if not conf['strategy'] then return result end
local strategy = conf['strategy']
local widen = num(conf['tier_widen_seconds'], 0)
local ring = num(conf['ring_timeout'], 20) * 1000
local qskills = cjson.decode(conf['required_skills'] or '{}')
local members = hgetall(qkey(q, 'members'))
local counts = hgetall(qkey(q, 'agent_calls'))

-- Free agents of this queue with what the strategies need to know about them.
local free, nfree = {}, 0
for i = 1, #idle, 2 do
  local a = idle[i]
  local info = hgetall(akey(a))
  local m = members[a]
  if info['state'] == 'available' and m then
    local tier, pen = string.match(m, '^(%d+):(%d+)$')
    free[#free + 1] = {name = a, idle = tonumber(idle[i + 1]), tier = tonumber(tier),
      penalty = tonumber(pen), calls = num(counts[a], 0), kind = info['kind'] or 'browser',
      skills = cjson.decode(info['skills'] or '{}'), taken = false}
    nfree = nfree + 1
  else
    redis.call('ZREM', qkey(q, 'idle'), a)  -- repair a stale entry
  end
end

local function qualifies(ag, req)
  for skill, min in pairs(req) do
    if num(ag.skills[skill], -1) < tonumber(min) then return false end
  end
  return true
end

local function skill_score(ag, req)
  local s = 0
  for skill, _ in pairs(req) do s = s + num(ag.skills[skill], 0) end
  return s
end

local function offer(c, ag, auto)
  ag.taken = true
  nfree = nfree - 1
  local k = akey(ag.name)
  redis.call('SADD', ckey(c) .. ':offered', ag.name)
  redis.call('HSET', ckey(c), 'state', 'offered')
  redis.call('HSET', k, 'offer', c, 'offer_queue', q)
  set_state(ag.name, 'offered', now, '')
  if auto then
    assign(c, ag.name, now)
    result[#result + 1] = c; result[#result + 1] = ag.name; result[#result + 1] = 'assigned'
  else
    redis.call('ZADD', P .. 'offers', now + ring, c .. '|' .. ag.name)
    local info = redis.call('HMGET', ckey(c), 'caller', 'callback')
    notify_agent(ag.name, 'offer', {call = c, queue = q, caller = info[1] or '',
      callback = info[2] or ''})
    result[#result + 1] = c; result[#result + 1] = ag.name; result[#result + 1] = 'offer'
  end
end

local callers = redis.call('ZRANGE', qkey(q, 'waiting'), 0, scan - 1)
for _, c in ipairs(callers) do
  if nfree == 0 then break end
  local call = hgetall(ckey(c))
  -- A callback whose last attempt failed waits out the queue's retry spacing.
  if call['state'] == 'waiting' and num(call['cb_not_before'], 0) <= now then
    local req = {}
    for s, l in pairs(qskills) do req[s] = l end
    for s, l in pairs(cjson.decode(call['skills'] or '{}')) do
      if req[s] == nil or tonumber(l) > tonumber(req[s]) then req[s] = l end
    end
    local max_tier = 9
    if widen > 0 then
      max_tier = 1 + math.floor((now - num(call['joined'], now)) / 1000 / widen)
    end
    -- Eligible agents in the best (lowest tier, then lowest penalty) group.
    local group, bt, bp = {}, 99, 1000
    for _, ag in ipairs(free) do
      if not ag.taken and ag.tier <= max_tier and qualifies(ag, req) then
        if ag.tier < bt or (ag.tier == bt and ag.penalty < bp) then
          group, bt, bp = {ag}, ag.tier, ag.penalty
        elseif ag.tier == bt and ag.penalty == bp then
          group[#group + 1] = ag
        end
      end
    end
    if #group > 0 then
      if strategy == 'ring_all' then
        for _, ag in ipairs(group) do offer(c, ag, false) end
      else
        local pick = group[1]
        if strategy == 'random' then
          pick = group[math.min(#group, math.floor(rand * #group) + 1)]
        elseif strategy == 'round_robin' then
          table.sort(group, function(x, y) return x.name < y.name end)
          local last = redis.call('GET', qkey(q, 'rr')) or ''
          pick = group[1]
          for _, ag in ipairs(group) do
            if ag.name > last then pick = ag; break end
          end
          redis.call('SET', qkey(q, 'rr'), pick.name)
        else
          for _, ag in ipairs(group) do
            local better
            if strategy == 'fewest_calls' then
              better = ag.calls < pick.calls or (ag.calls == pick.calls and ag.idle < pick.idle)
            elseif strategy == 'skills' then
              local s1, s2 = skill_score(ag, req), skill_score(pick, req)
              better = s1 > s2 or (s1 == s2 and ag.idle < pick.idle)
            else  -- longest_idle
              better = ag.idle < pick.idle or (ag.idle == pick.idle and ag.name < pick.name)
            end
            if better then pick = ag end
          end
        end
        -- SIP agents are rung by the caller's worker (the Dial is the offer); browser agents
        -- accept in the console.
        offer(c, pick, pick.kind == 'sip')
      end
    end
  end
end
return result
