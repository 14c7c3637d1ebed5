-- One chunk per call.
-- Keys: done done:s done:n dedup dedup:ev counts
-- ARGV: delivered_before, now, chunk. Returns {events deleted, entries handled (go on while any
-- kind reached `chunk`), dedup keys deleted}. A second s holds deliveries in [s, s + 1): its
-- count goes when s + 1 <= delivered_before.

local cutoff, chunk = tonumber(ARGV[1]), tonumber(ARGV[3])
local moved = roll_up(tonumber(ARGV[2]), chunk)
local exact = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', '(' .. ARGV[1], 'LIMIT', 0, chunk)
if #exact > 0 then redis.call('ZREM', K_DONE, unpack(exact)) end
local seconds = redis.call('ZRANGEBYSCORE', K_DONE_S, '-inf', num(cutoff - 1), 'LIMIT', 0, chunk)
local events = #exact
for _, second in ipairs(seconds) do
  events = events + (tonumber(redis.call('HGET', K_DONE_N, second)) or 0)
end
if #seconds > 0 then
  redis.call('ZREM', K_DONE_S, unpack(seconds))
  redis.call('HDEL', K_DONE_N, unpack(seconds))
end
count('delivered', -events)
if cutoff > (tonumber(redis.call('HGET', K_COUNTS, 'pruned_before')) or -math.huge) then
  redis.call('HSET', K_COUNTS, 'pruned_before', num(cutoff))
end
local expired = redis.call('ZRANGEBYSCORE', K_DEDUP, '-inf', ARGV[2], 'LIMIT', 0, chunk)
if #expired > 0 then
  redis.call('ZREM', K_DEDUP, unpack(expired))
  redis.call('HDEL', K_DEDUP_EV, unpack(expired))
end
return {events, math.max(moved, #exact, #seconds), #expired}
