-- The customer of a callback answered and their channel reached this worker: the entry
-- becomes that live caller's, under the channel's call id, owned and leased by this worker
-- like any caller's, at the same place; an agent who accepted it is connected now.
-- A repeat (its reply was lost) gives the same answer.
-- ARGV: prefix, entry, channel, owner, now_ms, lease_ms
-- -> {'ok', queue, state, agent, target, kind, priority, joined} | {'err', 'no_entry'}
local entry, chan, owner, now, lease = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]),
  tonumber(ARGV[6])
local old, new = ckey(entry), ckey(chan)
-- Only a callback being dialled can be answered (not one a forged channel variable names).
local dialling = redis.call('HMGET', old, 'callback', 'cb_dialer', 'state')
if dialling[1] and dialling[2] and dialling[3] == 'assigned' then
  local call = hgetall(old)
  local q = call['queue']
  -- The customer's leg can reach a worker before the dialling worker hears how its dial
  -- went (the engine's reply comes later): the attempt's outcome is known now.
  if not call['cb_answered'] then callback_history(entry, 'attempt', now, {outcome = 'answered'}) end
  redis.call('ZREM', P .. 'callbacks:due', entry)
  redis.call('ZREM', P .. 'leases', entry)
  redis.call('SREM', qkey(q, 'callbacks'), entry)
  if redis.call('ZREM', qkey(q, 'waiting'), entry) == 1 then
    redis.call('ZADD', qkey(q, 'waiting'), call['score'], chan)
  end
  for _, a in ipairs(redis.call('SMEMBERS', old .. ':offered')) do
    release_offer(entry, a, 'caller_left', now)
  end
  redis.call('DEL', old .. ':offered')
  if entry ~= chan then redis.call('RENAME', old, new) end
  local a = call['agent']
  if a and redis.call('HGET', akey(a), 'call') == entry then
    redis.call('HSET', akey(a), 'call', chan)
  end
  redis.call('HDEL', new, 'callback', 'cb_not_before', 'cb_dialer')
  redis.call('HSET', new, 'cb_number', call['callback'], 'owner', owner, 'cb_answered', now)
  redis.call('HINCRBY', qkey(q, 'stats'), 'callbacks_answered', 1)
  callback_history(chan, 'answered', now, {channel = chan})
elseif redis.call('HGET', new, 'cb_id') ~= entry or redis.call('HGET', new, 'owner') ~= owner then
  return {'err', 'no_entry'}
end
redis.call('SADD', P .. 'worker:' .. owner .. ':calls', chan)
redis.call('ZADD', P .. 'leases', now + lease, chan)
local call = hgetall(new)
local target, kind = '', ''
if call['state'] == 'assigned' and call['agent'] then
  local info = hgetall(akey(call['agent']))
  kind = info['kind'] or 'browser'
  target = info['extension'] or ''
  if kind ~= 'sip' or target == '' then target = call['agent'] end
end
return {'ok', call['queue'], call['state'], call['agent'] or '', target, kind,
        call['priority'] or '0', call['joined'] or '0'}
