-- Read only.
-- Keys: log counts
-- ARGV: after (a log entry id), count. Returns, per log entry after `after`: its id, 1 if the
-- event was pruned (its delivery, among the entries read, came before a prune's cutoff) or else
-- 0, then seq, state, at, name, key, attempts, last status, last message.

local entries = redis.call('XRANGE', K_LOG, '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
local pruned_before = tonumber(redis.call('HGET', K_COUNTS, 'pruned_before')) or -math.huge
local pruned = {}
for _, entry in ipairs(entries) do
  local f = entry[2]
  if f[4] == 'delivered' and tonumber(f[6]) < pruned_before then
    pruned[f[2]] = true
  end
end
local out = {}
for _, entry in ipairs(entries) do
  local f = entry[2]
  out[#out + 1] = entry[1]
  out[#out + 1] = pruned[f[2]] and 1 or 0
  for i = 2, #f, 2 do out[#out + 1] = f[i] end
end
return out
