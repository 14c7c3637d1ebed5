-- KEYS: the bucket. ARGV: limit per minute, now ('' for Redis's clock), how many tokens to
-- spend (0: only look). Returns {1 if allowed, tokens left}.
local limit, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
  tokens, at = limit, now
end
tokens = math.min(limit, tokens + math.max(0, now - at) * limit / 60)
local allowed = 1
local cost = tonumber(ARGV[3])
if cost > 0 then
  if tokens >= cost then tokens = tokens - cost else allowed = 0 end
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
  -- Full again after (limit - tokens) minutes' worth of refill: then it equals a new bucket.
  redis.call('PEXPIRE', KEYS[1], math.ceil((limit - tokens) * 60000 / limit) + 1000)
end
return {allowed, string.format('%.17g', tokens)}
