-- KEYS: the Space's pace key. ARGV: 'reserve', now, interval[, n] or 'hold', now, until.
-- Returns the first start granted (for 'hold', now); 'reserve' grants n starts (default 1)
-- one interval apart. The key lives a minute past its slot, then it is moot.
local stored = tonumber(redis.call('GET', KEYS[1])) or 0
local now = tonumber(ARGV[2])
local start, next_slot = now, 0
if ARGV[1] == 'reserve' then
  start = math.max(now, stored)
  next_slot = start + tonumber(ARGV[3]) * (tonumber(ARGV[4]) or 1)
else
  next_slot = math.max(tonumber(ARGV[3]), stored)
end
local ttl = math.max(1000, math.ceil((next_slot - now + 60) * 1000))
redis.call('SET', KEYS[1], string.format('%.17g', next_slot), 'PX', ttl)
return string.format('%.17g', start)
