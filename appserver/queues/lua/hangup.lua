-- A supervisor hangs up a queued or connected caller. A live worker owns the call: the
-- request goes to its inbox (it hangs the call up in the engine; the caller's flow then
-- leaves the queue or finishes the call as usual). Nobody renews its lease any more (its
-- worker died; a stuck entry): the entry is removed now, as the reaper would.
-- ARGV: prefix, call, now_ms -> {'sent' | 'removed', queue, state} | {'err', 'no_entry'}
local c, now = ARGV[2], tonumber(ARGV[3])
local ck = ckey(c)
local call = hgetall(ck)
if not call['state'] then return {'err', 'no_entry'} end
local lease = tonumber(redis.call('ZSCORE', P .. 'leases', c))
if lease and lease > now and call['owner'] then
  push_owner(c, {type = 'hangup', call = c})
  return {'sent', call['queue'], call['state']}
end
reap_call(c, now)
return {'removed', call['queue'], call['state']}
