-- Keys: ev ready:* readyat dead counts log queued:*
-- ARGV: now, then either '', seqs (those ids) or a limit (the oldest dead, up to it).
-- Returns how many events were replayed.

local now = tonumber(ARGV[1])
local replayed = 0

local function replay(seq)
  if redis.call('ZREM', K_DEAD, seq) == 0 then return end
  local e = load(seq)
  if not e then return end
  e.s, e.t, e.x = 'q', now, nil
  save(seq, e)
  make_ready(seq, e)
  log(seq, e, 'replayed', now, e.a, e.ls, e.lm)
  count('dead', -1)
  count_queued(seq, e, 1)
  replayed = replayed + 1
end

if ARGV[2] == '' then
  for i = 3, #ARGV do replay(ARGV[i]) end
else
  for _, seq in ipairs(redis.call('ZRANGE', K_DEAD, 0, tonumber(ARGV[2]) - 1)) do replay(seq) end
end
return replayed
