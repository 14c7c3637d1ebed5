-- Dedup and insert, in one script.
-- Keys: seq ev ready:* readyat dedup counts log queued:*
-- ARGV[1]: the events, packed by `Batch` (batch.py; one argument: far cheaper to send than nine
-- per event). Per event: now, received_at, dedup_until (doubles), priority (byte), the number of
-- dedup keys (uint16), then name, key, payload and the dedup keys, each length-prefixed.
-- Returns one character per event: '1' queued, '0' duplicate.

local blob, pos = ARGV[1], 1
local out, queued = {}, 0
while pos <= #blob do
  local now, received, dedup_until, priority, nkeys, name, key, payload
  now, received, dedup_until, priority, nkeys, name, key, payload, pos =
    struct.unpack('<dddBHI4c0I4c0I4c0', blob, pos)
  local keys = {}
  for j = 1, nkeys do
    keys[j], pos = struct.unpack('<I4c0', blob, pos)
  end
  local dup = false
  for _, k in ipairs(keys) do
    local expires = redis.call('ZSCORE', K_DEDUP, k)
    if expires and tonumber(expires) > now then
      dup = true
      break
    end
  end
  if dup then
    out[#out + 1] = '0'
  else
    for _, k in ipairs(keys) do
      redis.call('ZADD', K_DEDUP, num(dedup_until), k)
    end
    local seq = redis.call('INCR', K_SEQ)
    local e = {p = priority, n = name, k = key, b = payload, r = received, t = now, a = 0, s = 'q'}
    save(seq, e)
    make_ready(seq, e)
    redis.call('ZADD', queued_key(e), seq, seq)
    log(seq, e, 'accepted', received, 0)
    queued = queued + 1
    out[#out + 1] = '1'
  end
end
count('queued', queued)
return table.concat(out)
