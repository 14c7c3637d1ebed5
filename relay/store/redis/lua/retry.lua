-- Keys: ev ready:* readyat wait leased counts log
-- ARGV: seq, at, status ('' for none), message, now. Returns 1, or 0 if not queued.

local seq = ARGV[1]
local e = load(seq)
if not e or e.s ~= 'q' then return 0 end
unqueue(seq, e)
if e.a == 0 then count('retrying', 1) end
e.a, e.t, e.ls, e.lm = e.a + 1, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
save(seq, e)
redis.call('ZADD', K_WAIT, ARGV[2], seq)
log(seq, e, 'retrying', tonumber(ARGV[5]), e.a, e.ls, e.lm)
return 1
