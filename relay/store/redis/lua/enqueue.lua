-- Dedup, merge twins and insert, in one script: the rules of `Outbox.enqueue` (relay/store/
-- base.py), as relay/store/sqlite/enqueue.py has them. Each event's writes are done before the
-- next event is read, so an event of the same call is met like any earlier one.
-- Keys: seq ev ready:* readyat wait leased dedup dedup:ev counts log queued:* meta
-- ARGV[1]: the events, packed by `Batch` (batch.py; one argument: far cheaper to send than a
-- dozen per event). Per event: now, received_at, dedup_until, due (doubles), priority, source
-- (0 API, 1 browser; bytes), the number of dedup keys (uint16), then name, key and payload,
-- each length-prefixed, then per dedup key: 1 if it is a twin key else 0 (byte), the key
-- (length-prefixed).
-- Returns two items per event: its outcome ('q' queued, 'd' duplicate, 'm' merged) and the
-- idempotency key of the event it met (false if none).

local SOURCES = {[0] = 'api', [1] = 'browser'}
local legacy_until = nil  -- read once, if needed: see layout.lua

-- What the live key `k` names, as parse_named gives it, or nil. `legacy` is the layout-1
-- "idem:KEY" of the event's "idem:NAME:KEY" (nil for other keys).
local function known(k, now, legacy)
  local expires = redis.call('ZSCORE', K_DEDUP, k)
  if expires and tonumber(expires) > now then
    local value = redis.call('HGET', K_DEDUP_EV, k)
    if value then return parse_named(value) end
    if string.sub(k, 1, 6) == 'order:' then  -- layout 1: an API event not known any more
      return {o = 'api', k = string.match(k, '^[^:]*:[^:]*:(.*)$') or k}
    end
  end
  if legacy == nil then return nil end
  legacy_until = legacy_until or tonumber(redis.call('HGET', K_META, 'legacy_until')) or 0
  if now >= legacy_until then return nil end
  expires = redis.call('ZSCORE', K_DEDUP, legacy)
  if expires and tonumber(expires) > now and redis.call('HEXISTS', K_DEDUP_EV, legacy) == 0 then
    return {o = 'api', k = string.sub(legacy, 6)}
  end
  return nil
end

-- The event named by `met` if it may take the twin from `source` now: queued, not leased, no
-- twin yet, of the other source. Returns it, or nil.
local function takes_twin(met, source, now)
  if met.seq == nil then return nil end
  local e = load(met.seq)
  if e == nil or e.s ~= 'q' or e.w ~= nil or e.o == source then return nil end
  local lease = redis.call('ZSCORE', K_LEASED, met.seq)
  if lease and tonumber(lease) > now then return nil end
  return e
end

-- After a merge changed the event's priority `was` or its due time: the sets that hold it.
local function moved(seq, e, was, now)
  if was ~= e.p then
    redis.call('ZREM', QUEUED[was], seq)
    redis.call('ZADD', queued_key(e), seq, seq)
  end
  if redis.call('ZSCORE', K_LEASED, seq) then return end  -- a lapsed lease: claim promotes it
  local due = redis.call('ZSCORE', K_WAIT, seq)
  if due then
    if e.t < tonumber(due) then
      redis.call('ZREM', K_WAIT, seq)
      make_ready(seq, e)
    end
  else
    redis.call('ZREM', READY[was], seq)
    make_ready(seq, e)
  end
end

-- Two twins become one event, kept as the API event with the browser's payload as its twin.
local function merge(seq, e, ev, now)
  local was = e.p
  if ev.source == 'api' then  -- the API event takes over the browser event
    e.w, e.b, e.k, e.o = e.b, ev.payload, ev.key, 'api'
    if ev.priority ~= PAGE_VIEW then e.p = 0 else e.p = PAGE_VIEW end
    for _, k in ipairs(e.d or {}) do  -- the browser's keys that still name it name the API's
      local value = redis.call('HGET', K_DEDUP_EV, k)
      if value and parse_named(value).seq == seq then
        redis.call('HSET', K_DEDUP_EV, k, seq .. '|api|' .. ev.key)
      end
    end
    e.d = nil
  else
    e.w = ev.payload
  end
  if e.a == 0 and e.t > now then e.t = now end  -- due at once, unless attempted already
  save(seq, e)
  moved(seq, e, was, now)
  for _, k in ipairs(ev.keys) do name_key(k, ev.dedup_until, seq, 'api', e.k) end
end

-- A new event; its keys name it.
local function insert(ev, now)
  local seq = redis.call('INCR', K_SEQ)
  local e = {p = ev.priority, n = ev.name, k = ev.key, b = ev.payload, r = ev.received,
             t = ev.due, a = 0, s = 'q', o = ev.source}
  if ev.source == 'browser' and #ev.keys > 0 then e.d = ev.keys end  -- for a takeover
  save(seq, e)
  place(seq, e, now)
  redis.call('ZADD', queued_key(e), seq, seq)
  log(seq, e, 'accepted', ev.received, 0)
  for _, k in ipairs(ev.keys) do name_key(k, ev.dedup_until, seq, ev.source, ev.key) end
end

-- The outcome of one event and the key of the event it met.
local function add(ev, now)
  local found, legacy_prefix = {}, 'idem:' .. ev.name .. ':'
  for j, k in ipairs(ev.keys) do
    local legacy = nil
    if string.sub(k, 1, #legacy_prefix) == legacy_prefix then
      legacy = 'idem:' .. string.sub(k, #legacy_prefix + 1)
    end
    local met = known(k, now, legacy)
    if met then found[#found + 1] = {met = met, twin = ev.twin[j]} end
  end
  for _, f in ipairs(found) do
    if f.met.o == ev.source then return 'd', f.met.k end
  end
  local twin = nil
  for _, f in ipairs(found) do
    if f.twin then twin = f.met break end
  end
  if twin then
    local e = takes_twin(twin, ev.source, now)
    if e then
      merge(twin.seq, e, ev, now)
      return 'm', twin.k  -- the key it had before the merge
    end
  end
  local other = twin or (found[1] and found[1].met)
  if other and ev.source ~= 'api' then return 'd', other.k end  -- the API's event wins
  insert(ev, now)
  return 'q', other and other.k or false
end

local blob, pos = ARGV[1], 1
local out, queued = {}, 0
while pos <= #blob do
  local ev, now, source, nkeys = {keys = {}, twin = {}}, nil, nil, nil
  now, ev.received, ev.dedup_until, ev.due, ev.priority, source, nkeys, ev.name, ev.key,
    ev.payload, pos = struct.unpack('<ddddBBHI4c0I4c0I4c0', blob, pos)
  ev.source = SOURCES[source]
  for j = 1, nkeys do
    local twin
    twin, ev.keys[j], pos = struct.unpack('<BI4c0', blob, pos)
    ev.twin[j] = twin == 1
  end
  local outcome, other = add(ev, now)
  if outcome == 'q' then queued = queued + 1 end
  out[#out + 1] = outcome
  out[#out + 1] = other
end
count('queued', queued)
return out
