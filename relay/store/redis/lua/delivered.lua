-- Keys: ev ready:* readyat wait leased dead done done:s done:n counts log queued:*
-- ARGV: now, seqs. Dead events may be marked delivered too (as in SQLite).
-- Returns how many events were marked delivered.

local done = 0
for i = 2, #ARGV do
  local seq = ARGV[i]
  local e = load(seq)
  if e then
    if e.s == 'q' then
      unqueue(seq, e)
      count_queued(seq, e, -1)
    else
      redis.call('ZREM', K_DEAD, seq)
      count('dead', -1)
    end
    redis.call('HDEL', K_EV, seq)
    redis.call('ZADD', K_DONE, ARGV[1], seq)
    log(seq, e, 'delivered', tonumber(ARGV[1]), e.a + 1)
    done = done + 1
  end
end
if done > 0 then
  count('delivered', done)
  roll_up(tonumber(ARGV[1]), 2 * done)  -- twice what came in: `done` stays about a minute
end
return done
