-- Read only.
-- Keys: ev dead
-- ARGV: limit. Returns seq, name, key, attempts, last status, last message, received, died.

local out = {}
for _, seq in ipairs(redis.call('ZRANGE', K_DEAD, 0, tonumber(ARGV[1]) - 1)) do
  local e = load(seq)
  if e then
    out[#out + 1] = seq
    out[#out + 1] = e.n
    out[#out + 1] = e.k
    out[#out + 1] = e.a
    out[#out + 1] = e.ls or false
    out[#out + 1] = e.lm or ''
    out[#out + 1] = num(e.r)
    out[#out + 1] = num(e.x)
  end
end
return out
