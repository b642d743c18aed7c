-- The caller leaves the queue. ARGV: prefix, call, outcome, now_ms[, owner]
-- outcome: abandoned | left | overflow | timeout | lost -> previous state or false
-- owner (a worker withdrawing a caller it has no flow for): only while the entry is still
-- that worker's; false otherwise (it became a callback, nobody's, or another worker took it
-- over meanwhile: not this worker's to remove).
local owner = ARGV[5]
if owner and owner ~= '' and redis.call('HGET', ckey(ARGV[2]), 'owner') ~= owner then
  return false
end
return leave(ARGV[2], ARGV[3], tonumber(ARGV[4]))
