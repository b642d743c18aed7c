-- A waiting caller asked to be called back and hangs up: their entry stays at its place in
-- line with no live caller (no owner, no lease: no worker's death removes it), matched like
-- any caller; the agent who accepts it has a worker dial the customer (callback_claim).
-- The engine kind and node the caller came in on are kept: the callback is dialled from
-- there (callback_claim); none ('') lets any worker dial it.
-- A repeat (its reply was lost) gives the same answer.
-- ARGV: prefix, call, number, now_ms, engine, node -> {'ok', queue, position} | {'err', reason}
-- reason: no_entry | assigned
local c, number, now, engine, node = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local ck = ckey(c)
local call = hgetall(ck)
if not call['queue'] then return {'err', 'no_entry'} end
local q = call['queue']
local function position()
  local rank = redis.call('ZRANK', qkey(q, 'waiting'), c)
  return rank and (rank + 1) or 0
end
if call['callback'] then return {'ok', q, position()} end
if call['state'] == 'assigned' then return {'err', 'assigned'} end
for _, a in ipairs(redis.call('SMEMBERS', ck .. ':offered')) do
  release_offer(c, a, 'caller_left', now)
end
if call['owner'] then redis.call('SREM', P .. 'worker:' .. call['owner'] .. ':calls', c) end
redis.call('ZREM', P .. 'leases', c)
redis.call('HDEL', ck, 'owner', 'taken_from')
redis.call('HSET', ck, 'callback', number, 'cb_id', c, 'cb_attempts', 0, 'cb_requested', now,
           'state', 'waiting')
if engine ~= '' then redis.call('HSET', ck, 'cb_engine', engine, 'cb_node', node) end
redis.call('SADD', qkey(q, 'callbacks'), c)
redis.call('HINCRBY', qkey(q, 'stats'), 'callbacks_requested', 1)
callback_history(c, 'requested', now)
return {'ok', q, position()}
