-- A worker handed a live caller whose queue entry another worker owns (that worker died and
-- the engine gave the call to this one) takes the entry over: the owner, its lease and the
-- per-worker call sets change; the join time, the score (the place in line), the priority
-- and an offer ringing an agent stay (the agent who accepts it is connected by the new owner:
-- push_owner reads the owner then). A distinct operation, never a relaxed enqueue: enqueue
-- still refuses the same call joining twice.
-- Refused when the call has no entry, or an agent was already assigned to it (the dead worker
-- may have been connecting them; the reaper frees that agent, call_lost, when the lease ends).
-- Taking over one's own entry again (a retry whose reply was lost) gives the same answer.
-- ARGV: prefix, call, new_owner, now_ms, lease_ms
-- -> {'ok', queue, state, priority, joined, menu_path, previous_owner} | {'err', reason}
-- reason: no_entry | assigned
local c, owner, now, lease = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = ckey(c)
local call = hgetall(ck)
if not call['owner'] then return {'err', 'no_entry'} end
if call['state'] == 'assigned' then return {'err', 'assigned'} end
local previous = call['owner']
if previous == owner then
  previous = call['taken_from'] or owner
else
  redis.call('SREM', P .. 'worker:' .. previous .. ':calls', c)
  redis.call('HSET', ck, 'owner', owner, 'taken_from', previous)
  redis.call('SADD', P .. 'worker:' .. owner .. ':calls', c)
end
redis.call('ZADD', P .. 'leases', now + lease, c)
return {'ok', call['queue'], call['state'], call['priority'] or '0', call['joined'] or '0',
        call['menu_path'] or '', previous}
