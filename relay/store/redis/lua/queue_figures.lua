-- Read only, unless queued:* must be rebuilt.
-- Keys: ev ready:* wait leased counts queued:*
-- No ARGV. Returns, for each priority (API conversions, browser conversions, page views): how
-- many are queued, and the received_at of the oldest (false if none). First rebuilds the
-- queued:* indexes from the sets if they do not add up to the queued count: Redis data written
-- by a relay from before they existed.

local queued = tonumber(redis.call('HGET', K_COUNTS, 'queued')) or 0
local indexed = 0
for p = 0, 2 do indexed = indexed + redis.call('ZCARD', QUEUED[p]) end
if indexed ~= queued then
  for p = 0, 2 do  -- scored by seq, as the ready sets are
    redis.call('DEL', QUEUED[p])
    redis.call('ZUNIONSTORE', QUEUED[p], 1, READY[p])
  end
  for _, key in ipairs({K_WAIT, K_LEASED}) do
    for _, seq in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local e = load(seq)
      if e then redis.call('ZADD', queued_key(e), seq, seq) end
    end
  end
end
local out = {}
for _, key in ipairs({K_QUEUED0, K_QUEUED1, K_QUEUED2}) do
  local first = redis.call('ZRANGE', key, 0, 0)
  local e = first[1] and load(first[1])
  out[#out + 1] = redis.call('ZCARD', key)
  out[#out + 1] = e and num(e.r) or false
end
return out
