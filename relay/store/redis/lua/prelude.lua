-- Run before every per-Space script (scripts.py joins them): names for KEYS, which are the
-- Space's seventeen keys in the order of SPACE_KEYS (scripts.py), and the moves between the
-- sets.

-- Read by the scripts only, so defined here only:
local LOG_SECONDS = 3600  -- the step log behind `changes` keeps a step this long, at least
local EXACT_SECONDS = 60  -- deliveries are kept one by one this long, then counted per second

local K_SEQ, K_EV, K_READY0, K_READY1, K_READYAT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_WAIT, K_LEASED, K_DEAD, K_DONE, K_DONE_S = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_DONE_N, K_DEDUP, K_COUNTS, K_MIGRATED, K_LOG = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local K_QUEUED0, K_QUEUED1 = KEYS[16], KEYS[17]

local function load(seq)
  local raw = redis.call('HGET', K_EV, seq)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end

local function save(seq, e)
  redis.call('HSET', K_EV, seq, cmsgpack.pack(e))
end

local function count(bucket, n)
  if n ~= 0 then redis.call('HINCRBY', K_COUNTS, bucket, n) end
end

local function ready_key(e)
  if e.p == 0 then return K_READY0 end
  return K_READY1
end

-- A queued, unleased event becomes claimable, in its priority's order.
local function make_ready(seq, e)
  redis.call('ZADD', ready_key(e), seq, seq)
  redis.call('ZADD', K_READYAT, e.t, seq)
end

-- Take a queued event out of the one set that holds it.
local function unqueue(seq, e)
  if redis.call('ZREM', K_LEASED, seq) == 1 then return end
  if redis.call('ZREM', K_WAIT, seq) == 1 then return end
  redis.call('ZREM', ready_key(e), seq)
  redis.call('ZREM', K_READYAT, seq)
end

local function queued_key(e)
  if e.p == 0 then return K_QUEUED0 end
  return K_QUEUED1
end

-- An event enters (sign 1) or leaves (-1) the queue: the counts and its priority's index.
local function count_queued(seq, e, sign)
  count('queued', sign)
  if e.a > 0 then count('retrying', sign) end
  if sign > 0 then
    redis.call('ZADD', queued_key(e), seq, seq)
  else
    redis.call('ZREM', queued_key(e), seq)
  end
end

local function num(x)
  return string.format('%.17g', x)
end

-- Deliveries older than EXACT_SECONDS before `now` become counts per second, up to `limit`
-- of them. Returns how many were moved.
local function roll_up(now, limit)
  local old = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', '(' .. num(now - EXACT_SECONDS),
                         'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #old, 2 do
    local second = math.floor(tonumber(old[i + 1]))
    redis.call('HINCRBY', K_DONE_N, second, 1)
    redis.call('ZADD', K_DONE_S, second, second)
    redis.call('ZREM', K_DONE, old[i])
  end
  return #old / 2
end

-- One step of an event for `changes`; the log keeps LOG_SECONDS of steps (by Redis's clock).
local log_since = nil
local function log(seq, e, state, at, attempts, status, message)
  if log_since == nil then
    log_since = (tonumber(redis.call('TIME')[1]) - LOG_SECONDS) * 1000
  end
  redis.call('XADD', K_LOG, 'MINID', '~', log_since, '*', 'e', seq, 's', state, 't', num(at),
             'n', e.n, 'k', e.k, 'a', attempts, 'c', status or '', 'm', message or '')
end
