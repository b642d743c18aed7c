-- The conversation between caller and agent ended. ARGV: prefix, call, now_ms -> 1 | 0
local c, now = ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', ckey(c), 'state') ~= 'assigned' then return 0 end
complete(c, now)
return 1
