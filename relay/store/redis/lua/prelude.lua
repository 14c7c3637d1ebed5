-- Run before every per-Space script (scripts.py joins them): names for KEYS, which are the
-- Space's twenty-one keys in the order of SPACE_KEYS (scripts.py), reading and writing an
-- event, the moves between the sets, and the dedup keys. layout.lua follows it (and may write,
-- once per Space, even before a script whose head says "Read only").

-- Read by the scripts only, so defined here only:
local LOG_SECONDS = 3600  -- the step log behind `changes` keeps a step this long, at least
local EXACT_SECONDS = 60  -- deliveries are kept one by one this long, then counted per second
local PAGE_VIEW = 2  -- the priorities: 0 API conversions, 1 browser conversions, 2 page views

local K_SEQ, K_EV, K_READY0, K_READY1, K_READY2 = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_READYAT, K_WAIT, K_LEASED, K_DEAD, K_DONE = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_DONE_S, K_DONE_N, K_DEDUP, K_DEDUP_EV = KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local K_COUNTS, K_MIGRATED, K_LOG = KEYS[15], KEYS[16], KEYS[17]
local K_QUEUED0, K_QUEUED1, K_QUEUED2, K_META = KEYS[18], KEYS[19], KEYS[20], KEYS[21]
local READY = {[0] = K_READY0, [1] = K_READY1, [2] = K_READY2}
local QUEUED = {[0] = K_QUEUED0, [1] = K_QUEUED1, [2] = K_QUEUED2}

local function num(x)
  return string.format('%.17g', x)
end

-- An event (see the package docstring for its fields), or nil. One saved by a relay from
-- before trust tiers has no source `o`: it is an API event, and its priority 1 meant a page
-- view (read so here rather than rewritten by the upgrade: any number of them, at no cost).
local function load(seq)
  local raw = redis.call('HGET', K_EV, seq)
  if not raw then return nil end
  local e = cmsgpack.unpack(raw)
  if e.o == nil then
    e.o = 'api'
    if e.p == 1 then e.p = PAGE_VIEW end
  end
  return e
end

local function save(seq, e)
  redis.call('HSET', K_EV, seq, cmsgpack.pack(e))
end

local function count(bucket, n)
  if n ~= 0 then redis.call('HINCRBY', K_COUNTS, bucket, n) end
end

local function ready_key(e)
  return READY[e.p] or K_READY2
end

local function queued_key(e)
  return QUEUED[e.p] or K_QUEUED2
end

-- A queued, unleased event becomes claimable, in its priority's order.
local function make_ready(seq, e)
  redis.call('ZADD', ready_key(e), seq, seq)
  redis.call('ZADD', K_READYAT, num(e.t), seq)
end

-- A queued, unleased event new to its set: claimable if due at `now`, else waiting until then.
local function place(seq, e, now)
  if e.t > now then
    redis.call('ZADD', K_WAIT, num(e.t), seq)
  else
    make_ready(seq, e)
  end
end

-- Take a queued event out of the one set that holds it.
local function unqueue(seq, e)
  if redis.call('ZREM', K_LEASED, seq) == 1 then return end
  if redis.call('ZREM', K_WAIT, seq) == 1 then return end
  redis.call('ZREM', ready_key(e), seq)
  redis.call('ZREM', K_READYAT, seq)
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

-- Dedup keys: K_DEDUP holds each key's expiry, K_DEDUP_EV what it names: the seq of the event
-- it ended in ('' if that event is not in this Redis), the event's source and its idempotency
-- key (the `other` of a later duplicate or merge, even once the event is delivered).
local function name_key(k, expires, seq, source, key)
  redis.call('ZADD', K_DEDUP, 'GT', num(expires), k)
  redis.call('HSET', K_DEDUP_EV, k, seq .. '|' .. source .. '|' .. key)
end

local function parse_named(value)
  local seq, source, key = string.match(value, '^(%d*)|(%a+)|(.*)$')
  return {seq = seq ~= '' and seq or nil, o = source, k = key}
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
