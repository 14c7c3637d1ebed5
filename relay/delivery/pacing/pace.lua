-- KEYS: the Space's pace key. ARGV: 'reserve', now, interval or 'hold', now, until. Returns
-- the start granted (for 'hold', now). The key lives a minute past its slot, then it is moot.
local stored = tonumber(redis.call('GET', KEYS[1])) or 0
local now = tonumber(ARGV[2])
local start, next_slot = now, 0
if ARGV[1] == 'reserve' then
  start = math.max(now, stored)
  next_slot = start + tonumber(ARGV[3])
else
  next_slot = math.max(tonumber(ARGV[3]), stored)
end
local ttl = math.max(1000, math.ceil((next_slot - now + 60) * 1000))
redis.call('SET', KEYS[1], string.format('%.17g', next_slot), 'PX', ttl)
return string.format('%.17g', start)
