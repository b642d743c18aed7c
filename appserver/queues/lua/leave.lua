-- The caller leaves the queue. ARGV: prefix, call, outcome, now_ms
-- outcome: abandoned | left | overflow | timeout | lost -> previous state or false
return leave(ARGV[2], ARGV[3], tonumber(ARGV[4]))
