-- Keys: seq ev ready:* readyat wait dead dedup dedup:ev counts migrated queued:*
-- ARGV: now, number of events E, then E events, each FIELDS entries (mark, status 'q' or 'd',
-- priority, name, key, payload, received_at, next_attempt_at, attempts, last status, last
-- message, died_at, source, twin ('' for none), the number of its dedup keys N; see
-- `ImportedEvent.args` in batch.py) followed by N pairs of dedup key and expiry (the keys that
-- name it); then quadruples of dedup key, expiry, source and idempotency key (`ImportedKey`),
-- for keys whose event is not imported (delivered, or gone).
-- An event whose mark is already in K_MIGRATED was moved, with its keys, by an earlier,
-- interrupted run and is skipped. A key keeps the later of its two expiries; one whose event
-- is not imported does not replace what a key already names. Returns how many events were
-- added.

local now, events = tonumber(ARGV[1]), tonumber(ARGV[2])
local FIELDS = 15  -- ARGV entries per event, before its keys
local imported, i = 0, 3
for _ = 1, events do
  local nkeys = tonumber(ARGV[i + 14])
  if redis.call('HEXISTS', K_MIGRATED, ARGV[i]) == 0 then
    local seq = redis.call('INCR', K_SEQ)
    local e = {s = ARGV[i + 1], p = tonumber(ARGV[i + 2]), n = ARGV[i + 3], k = ARGV[i + 4],
               b = ARGV[i + 5], r = tonumber(ARGV[i + 6]), t = tonumber(ARGV[i + 7]),
               a = tonumber(ARGV[i + 8]), ls = tonumber(ARGV[i + 9]), lm = ARGV[i + 10],
               x = tonumber(ARGV[i + 11]), o = ARGV[i + 12]}
    if ARGV[i + 13] ~= '' then e.w = ARGV[i + 13] end
    local keys = {}
    for j = 1, nkeys do keys[j] = ARGV[i + FIELDS + 2 * (j - 1)] end
    if e.o == 'browser' and nkeys > 0 then e.d = keys end  -- for a takeover (enqueue.lua)
    save(seq, e)
    if e.s == 'd' then
      redis.call('ZADD', K_DEAD, seq, seq)
      count('dead', 1)
    else
      place(seq, e, now)
      count_queued(seq, e, 1)
    end
    for j, k in ipairs(keys) do
      name_key(k, tonumber(ARGV[i + FIELDS + 2 * j - 1]), seq, e.o, e.k)
    end
    redis.call('HSET', K_MIGRATED, ARGV[i], seq)
    imported = imported + 1
  end
  i = i + FIELDS + 2 * nkeys
end
for j = i, #ARGV, 4 do
  redis.call('ZADD', K_DEDUP, 'GT', ARGV[j + 1], ARGV[j])
  redis.call('HSETNX', K_DEDUP_EV, ARGV[j], '|' .. ARGV[j + 2] .. '|' .. ARGV[j + 3])
end
return imported
