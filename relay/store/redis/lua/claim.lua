-- Promote due waits and expired leases, then lease the first n: ready:0, then ready:1, then
-- ready:2.
-- Keys: ev ready:* readyat wait leased
-- ARGV: now, n, lease_until, promote limit.
-- Returns seq, name, key, attempts, received_at, payload, source, twin (false if none) for each
-- claimed event.

local now, n, lease_until = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]

local function promote(from)
  for _, seq in ipairs(redis.call('ZRANGEBYSCORE', from, '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])) do
    redis.call('ZREM', from, seq)
    local e = load(seq)
    if e then make_ready(seq, e) end
  end
end
promote(K_LEASED)
promote(K_WAIT)

local out, taken = {}, 0
for _, ready in ipairs({K_READY0, K_READY1, K_READY2}) do
  local skipped = 0  -- due later than this caller's now (its clock is behind the enqueuer's)
  while taken < n do
    local seqs = redis.call('ZRANGE', ready, skipped, skipped + n - taken - 1)
    if #seqs == 0 then break end
    for _, seq in ipairs(seqs) do
      local e = load(seq)
      if e and e.t > now then
        skipped = skipped + 1
      else
        redis.call('ZREM', ready, seq)
        redis.call('ZREM', K_READYAT, seq)
        if e then
          redis.call('ZADD', K_LEASED, lease_until, seq)
          out[#out + 1] = seq
          out[#out + 1] = e.n
          out[#out + 1] = e.k
          out[#out + 1] = e.a
          out[#out + 1] = num(e.r)
          out[#out + 1] = e.b
          out[#out + 1] = e.o
          out[#out + 1] = e.w or false
          taken = taken + 1
        end
      end
    end
  end
end
return out
