-- One queue's figures summed over the 5-minute intervals from from_ms to now_ms (the
-- wallboard's "today": from local midnight, which the caller computes in its time zone).
-- ARGV: prefix, queue, from_ms, now_ms -> counters_json (joined, answered, answered_in_sl,
-- abandoned, overflowed, exited, moved, ended, wait_ms, handle_ms, calls:<agent>)
local q, from, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local first, last = math.floor(from / INTERVAL_MS), math.floor(now / INTERVAL_MS)
if last - first > 600 then first = last - 600 end  -- at most two days are kept
local sums = {}
for i = first, last do
  local flat = redis.call('HGETALL', qkey(q, 'i:' .. i))
  for j = 1, #flat, 2 do sums[flat[j]] = (sums[flat[j]] or 0) + tonumber(flat[j + 1]) end
end
if next(sums) == nil then return '{}' end
return cjson.encode(sums)
