-- ARGV: prefix, agent, call, reason (no_answer|declined), now_ms -> 1 | 0
local a, c, reason, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HGET', akey(a), 'offer') ~= c then return 0 end
release_offer(c, a, reason, now)
return 1
