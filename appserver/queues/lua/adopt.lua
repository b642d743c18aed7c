-- A worker that took over a live channel (e.g. after an engine reconnect) takes its caller.
-- ARGV: prefix, call, new_owner, now_ms, lease_ms -> {state, queue} | false
local c, owner, now, lease = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = ckey(c)
local old = redis.call('HGET', ck, 'owner')
if not old then return false end
redis.call('SREM', P .. 'worker:' .. old .. ':calls', c)
redis.call('HSET', ck, 'owner', owner)
redis.call('SADD', P .. 'worker:' .. owner .. ':calls', c)
redis.call('ZADD', P .. 'leases', now + lease, c)
return {redis.call('HGET', ck, 'state'), redis.call('HGET', ck, 'queue')}
