-- A worker claims callbacks an agent accepted, to dial the customers. A claim lasts claim_ms
-- (longer than the ring time): if the worker dies meanwhile, another claims it again then.
-- Node affinity: a callback is dialled from the engine node its caller came in on (cb_engine,
-- cb_node; see callback_request). The worker names the nodes its links reach now, recorded as
-- seen; it claims callbacks of those nodes, and those of another node of its engine only once
-- no worker has seen that node for grace_ms (it is gone). Never those of another engine kind.
-- A callback with no node (requested before nodes were kept) goes to any worker.
-- ARGV: prefix, owner, now_ms, claim_ms, limit, engine, grace_ms, node...
-- -> flat list of {call, queue, number, agent, attempt, node}
local owner, now, claim, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local engine, grace = ARGV[6], tonumber(ARGV[7])
local seen_key = P .. 'callbacks:nodes'  -- "<engine>/<node>" -> when a worker last reached it
local NODE_SEEN_TTL_MS = 86400000  -- a node unseen for a day is forgotten (gone all the same)
local mine = {}
for i = 8, #ARGV do
  mine[ARGV[i]] = true
  redis.call('ZADD', seen_key, now, engine .. '/' .. ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', seen_key, '-inf', now - NODE_SEEN_TTL_MS)

local function may_dial(call)
  local origin = call['cb_engine']
  if not origin then return true end
  if origin ~= engine then return false end
  if mine[call['cb_node']] then return true end
  local seen = tonumber(redis.call('ZSCORE', seen_key, origin .. '/' .. call['cb_node']))
  return seen == nil or now - seen >= grace
end

local due = redis.call('ZRANGEBYSCORE', P .. 'callbacks:due', '-inf', now)
local out, claimed = {}, 0
for _, c in ipairs(due) do
  if claimed >= limit then break end
  local ck = ckey(c)
  local f = redis.call('HMGET', ck, 'state', 'callback', 'queue', 'agent', 'cb_engine', 'cb_node')
  local call = {state = f[1], callback = f[2], queue = f[3], agent = f[4], cb_engine = f[5],
                cb_node = f[6]}
  if call['state'] ~= 'assigned' or not call['callback'] then
    redis.call('ZREM', P .. 'callbacks:due', c)
  elseif may_dial(call) then
    claimed = claimed + 1
    redis.call('ZADD', P .. 'callbacks:due', now + claim, c)
    local attempt = redis.call('HINCRBY', ck, 'cb_attempts', 1)
    redis.call('HSET', ck, 'cb_dialer', owner)
    callback_history(c, 'dialing', now, {worker = owner})
    out[#out + 1] = c; out[#out + 1] = call['queue']; out[#out + 1] = call['callback']
    out[#out + 1] = call['agent'] or ''; out[#out + 1] = attempt
    out[#out + 1] = call['cb_node'] or ''
  end
end
return out
