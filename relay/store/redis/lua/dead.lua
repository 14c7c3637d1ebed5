-- Keys: ev ready:* readyat wait leased dead counts log queued:*
-- ARGV: seq, status ('' for none), message, now. Returns 1, or 0 if not queued.

local seq = ARGV[1]
local e = load(seq)
if not e or e.s ~= 'q' then return 0 end
unqueue(seq, e)
count_queued(seq, e, -1)
e.a, e.s, e.ls, e.lm, e.x = e.a + 1, 'd', tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
save(seq, e)
redis.call('ZADD', K_DEAD, seq, seq)
log(seq, e, 'dead', e.x, e.a, e.ls, e.lm)
count('dead', 1)
return 1
