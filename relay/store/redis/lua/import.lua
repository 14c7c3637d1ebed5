-- Keys: seq ev ready:* readyat wait dead dedup counts migrated queued:*
-- ARGV: now, number of events E, then E events of FIELDS entries (mark, status 'q' or 'd',
-- priority, name, key, payload, received_at, next_attempt_at, attempts, last status, last
-- message, died_at; see `ImportedEvent.args` in batch.py), then pairs of dedup key and expiry.
-- An event whose mark is already in K_MIGRATED was moved by an earlier, interrupted run and is
-- skipped. Returns how many events were added.

local now, events = tonumber(ARGV[1]), tonumber(ARGV[2])
local FIELDS = 12  -- ARGV entries per event
local imported, i = 0, 3
for _ = 1, events do
  if redis.call('HSETNX', K_MIGRATED, ARGV[i], 1) == 1 then
    local seq = redis.call('INCR', K_SEQ)
    local e = {s = ARGV[i + 1], p = tonumber(ARGV[i + 2]), n = ARGV[i + 3], k = ARGV[i + 4],
               b = ARGV[i + 5], r = tonumber(ARGV[i + 6]), t = tonumber(ARGV[i + 7]),
               a = tonumber(ARGV[i + 8]), ls = tonumber(ARGV[i + 9]), lm = ARGV[i + 10],
               x = tonumber(ARGV[i + 11])}
    save(seq, e)
    if e.s == 'd' then
      redis.call('ZADD', K_DEAD, seq, seq)
      count('dead', 1)
    else
      if e.t <= now then make_ready(seq, e) else redis.call('ZADD', K_WAIT, e.t, seq) end
      count_queued(seq, e, 1)
    end
    imported = imported + 1
  end
  i = i + FIELDS
end
for j = i, #ARGV, 2 do
  redis.call('ZADD', K_DEDUP, 'GT', ARGV[j + 1], ARGV[j])
end
return imported
