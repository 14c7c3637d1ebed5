-- The global registry's script, not a Space's: it runs without the prelude.
-- KEYS: the registry. ARGV: a Space. Returns the Space's number, assigning the next one.

local n = redis.call('HGET', KEYS[1], 's:' .. ARGV[1])
if n then return tonumber(n) end
n = redis.call('HINCRBY', KEYS[1], 'last', 1)
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], n, 'n:' .. n, ARGV[1])
return n
