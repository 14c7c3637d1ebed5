-- Keys: ev ready:* readyat leased
-- ARGV: seqs. Returns 0.

for i = 1, #ARGV do
  if redis.call('ZREM', K_LEASED, ARGV[i]) == 1 then
    local e = load(ARGV[i])
    if e then make_ready(ARGV[i], e) end
  end
end
return 0
