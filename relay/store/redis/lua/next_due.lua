-- Read only.
-- Keys: readyat wait leased
-- No ARGV. Returns the earliest due time or lease expiry, false if the Space has nothing queued.

local best = nil
for _, key in ipairs({K_WAIT, K_READYAT, K_LEASED}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local t = tonumber(first[2])
    if best == nil or t < best then best = t end
  end
end
if best == nil then return false end
return num(best)
