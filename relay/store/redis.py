"""The scale-out outbox: every relay process on every machine shares one Redis.

Design
------
Per Space, a few sorted sets index the events and one hash holds them; every state change is
one Lua script, so each is atomic and two relays can never claim, dedup or count one event
differently. (Streams with consumer groups were the other candidate; they order by arrival
only, so conversions could not overtake page views, and a delayed retry would need a second
structure anyway.)

Keys of Space S (the `{S}` hash tag keeps them in one Redis Cluster slot):

    comet:{S}:seq      string  INCR counter: the Space's event sequence numbers
    comet:{S}:ev       hash    seq -> the event, MessagePack: name, key, payload, priority,
                               received_at, next_attempt_at, attempts, status (queued or
                               dead), last status and message, died_at
    comet:{S}:ready:0  zset    due conversions, unleased; score = seq (claim order: oldest)
    comet:{S}:ready:1  zset    due page views, the same
    comet:{S}:readyat  zset    the members of both ready sets; score = next_attempt_at
    comet:{S}:wait     zset    queued, unleased events due later (retries); score = due time
    comet:{S}:leased   zset    claimed events; score = lease expiry
    comet:{S}:dead     zset    dead letters; score = seq
    comet:{S}:done     zset    events delivered in the last minute; score = delivered_at
    comet:{S}:done:s   zset    earlier seconds in which events were delivered; score = second
    comet:{S}:done:n   hash    such a second -> how many events were delivered in it
    comet:{S}:dedup    zset    dedup keys; score = expiry (dedup_until)
    comet:{S}:counts   hash    queued, retrying, delivered, dead: kept by the scripts; and
                               pruned_before, the latest cutoff of prune (for `changes`)
    comet:{S}:migrated hash    marks of events moved in by `relay.store.migrate`
    comet:{S}:log      stream  each step (accepted, retrying, delivered, dead, replayed) with
                               the event's name and key, for `changes`; trimmed to the last
                               hour by Redis's clock (about 100 bytes a step)
    comet:{S}:queued:0 zset    every queued conversion, wherever it is (ready, wait or
                               leased); score = seq, so its first is the oldest (metrics)
    comet:{S}:queued:1 zset    every queued page view, the same

A queued event is in exactly one of: a ready set (plus readyat), wait, or leased. A delivered
event is dropped at once (Redis memory is RAM) and only counted until pruned: in `done` for a
minute, then (moved by later deliveries and by prune) in its second's count, so a week of
retention costs at most 604,800 small entries, however busy the shop. `prune` is exact for
events delivered in the minute before; older ones go by whole seconds (a second holding the
cutoff waits for the next prune).

Scripts: every per-Space script gets the seventeen keys above, in that order, as KEYS, and
touches no other key, so a Space's script runs in its slot on a Cluster. What each uses:

    enqueue       seq ev ready:* readyat dedup counts log queued:*
                                                        dedup and insert, in one script
    claim         ev ready:* readyat wait leased        promote due waits and expired leases,
                                                        then lease the first n: ready:0, ready:1
    delivered     ev ready:* readyat wait leased dead done done:s done:n counts log queued:*
    retry         ev ready:* readyat wait leased counts log
    dead          ev ready:* readyat wait leased dead counts log queued:*
    release       ev ready:* readyat leased
    replay        ev ready:* readyat dead counts log queued:*
    prune         done done:s done:n dedup counts       one chunk per call
    next_due      readyat wait leased                   read only
    dead_letters  ev dead                               read only
    import        seq ev ready:* readyat wait dead dedup counts migrated queued:*
    changes       log counts                            read only
    queue_figures ev ready:* wait leased counts queued:*  read only, unless queued:* must be
                                                        rebuilt (see `RedisOutbox.queue_figures`)

The one global key, `comet:spaces` (hash: `s:<space>` -> number, `n:<number>` -> space,
`last`), is touched only by its own `register` script, once per Space and process (cached),
never inside a Space's script. Stats, queue figures, dead letters, replay-all and prune list
the Spaces there.

Ids: the Outbox interface names events by int. An id is `space_number << 40 | seq`: the Space
number from `comet:spaces`, the seq from the Space's own counter, so an id alone finds its
Space's keys, ids stay below 2**63, and within a Space they grow in acceptance order, as
SQLite's do. (A global INCR per event would have been a second round trip per enqueue, or a
global key inside a Space's script.)

Durability: `enqueue` returns (and the relay answers 202) only after Redis has run the script.
With `appendonly yes` and `appendfsync always`, Redis writes and fsyncs the append-only file
before it answers, so an acknowledged event survives a crash of Redis or of its machine. With
`appendfsync everysec` (Redis's default for AOF) up to about one second of acknowledged
events can be lost when Redis or its machine crashes. Without AOF (RDB snapshots only),
everything since the last snapshot can be lost. Replication is asynchronous: after a failover
to a replica, what the old primary acknowledged but had not yet sent is lost too.

Time: like every backend, scripts take the caller's `now` (tests control the clock); dedup
keys expire by that clock, not by Redis TTLs, and `prune` removes the expired ones. Only the
step log's trimming and its entry ids use Redis's clock.

Failures: a Redis that cannot be reached, a socket timeout (`socket_timeout`, 5 s by default;
URL query parameters such as `?socket_timeout=2` override it) or a script error raise
`relay.errors.Unavailable`; commands are not retried, since a retried script could apply twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis

from relay.errors import Unavailable
from relay.redis_link import RedisLink, Script, ok
from relay.redis_link import number as _arg
from relay.store.base import (
    PRIORITY_CONVERSION,
    PRIORITY_PAGE_VIEW,
    Change,
    ChangePage,
    Claimed,
    DeadEvent,
    NewEvent,
    OutboxStats,
    QueueFigures,
)
from relay.store.coalesce import Coalescer, Pending, fail_all

log = logging.getLogger(__name__)

SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_SPACES = (1 << (63 - SEQ_BITS)) - 1
MIN_VERSION = (6, 2)  # ZADD GT, XADD MINID, exclusive XRANGE
CHUNK = 1000  # events or keys per prune/replay script, so no script holds Redis for long
PROMOTE = 1000  # due retries and expired leases made claimable per claim, at most
BUCKETS = ("queued", "retrying", "delivered", "dead")
SPACE_KEYS = (
    "seq", "ev", "ready:0", "ready:1", "readyat", "wait", "leased", "dead", "done", "done:s",
    "done:n", "dedup", "counts", "migrated", "log", "queued:0", "queued:1",
)  # fmt: skip
EVENT_HEAD = struct.Struct("<dddBH")  # an enqueued event's numbers; see ENQUEUE
LENGTH = struct.Struct("<I")
IMPORT_FIELDS = 12  # ARGV entries per event of the import script
EXACT_SECONDS = 60  # deliveries are kept one by one this long, then counted per second
LOG_SECONDS = 3600  # how long the step log behind `changes` keeps a step, at least
LOG_FIELDS = 10  # items per log entry in the changes script's answer

# Shared by every per-Space script: names for KEYS and the moves between the sets.
PRELUDE = f"""
local LOG_SECONDS = {LOG_SECONDS}
local EXACT_SECONDS = {EXACT_SECONDS}
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
"""

# ARGV[1]: the events, packed by `_Batch` (one argument: far cheaper to send than nine per
# event). Per event: now, received_at, dedup_until (doubles), priority (byte), the number of
# dedup keys (uint16), then name, key, payload and the dedup keys, each length-prefixed.
# Returns one character per event: '1' queued, '0' duplicate.
ENQUEUE = """
local blob, pos = ARGV[1], 1
local out, queued = {}, 0
while pos <= #blob do
  local now, received, dedup_until, priority, nkeys, name, key, payload
  now, received, dedup_until, priority, nkeys, name, key, payload, pos =
    struct.unpack('<dddBHI4c0I4c0I4c0', blob, pos)
  local keys = {}
  for j = 1, nkeys do
    keys[j], pos = struct.unpack('<I4c0', blob, pos)
  end
  local dup = false
  for _, k in ipairs(keys) do
    local expires = redis.call('ZSCORE', K_DEDUP, k)
    if expires and tonumber(expires) > now then
      dup = true
      break
    end
  end
  if dup then
    out[#out + 1] = '0'
  else
    for _, k in ipairs(keys) do
      redis.call('ZADD', K_DEDUP, num(dedup_until), k)
    end
    local seq = redis.call('INCR', K_SEQ)
    local e = {p = priority, n = name, k = key, b = payload, r = received, t = now, a = 0, s = 'q'}
    save(seq, e)
    make_ready(seq, e)
    redis.call('ZADD', queued_key(e), seq, seq)
    log(seq, e, 'accepted', received, 0)
    queued = queued + 1
    out[#out + 1] = '1'
  end
end
count('queued', queued)
return table.concat(out)
"""

# ARGV: now, n, lease_until, promote limit. Returns seq, name, key, attempts, received_at,
# payload for each claimed event.
CLAIM = """
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
for _, ready in ipairs({K_READY0, K_READY1}) do
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
          taken = taken + 1
        end
      end
    end
  end
end
return out
"""

# ARGV: now, seqs. Dead events may be marked delivered too (as in SQLite).
DELIVERED = """
local done = 0
for i = 2, #ARGV do
  local seq = ARGV[i]
  local e = load(seq)
  if e then
    if e.s == 'q' then
      unqueue(seq, e)
      count_queued(seq, e, -1)
    else
      redis.call('ZREM', K_DEAD, seq)
      count('dead', -1)
    end
    redis.call('HDEL', K_EV, seq)
    redis.call('ZADD', K_DONE, ARGV[1], seq)
    log(seq, e, 'delivered', tonumber(ARGV[1]), e.a + 1)
    done = done + 1
  end
end
if done > 0 then
  count('delivered', done)
  roll_up(tonumber(ARGV[1]), 2 * done)  -- twice what came in: `done` stays about a minute
end
return done
"""

# ARGV: seq, at, status ('' for none), message, now.
RETRY = """
local seq = ARGV[1]
local e = load(seq)
if not e or e.s ~= 'q' then return 0 end
unqueue(seq, e)
if e.a == 0 then count('retrying', 1) end
e.a, e.t, e.ls, e.lm = e.a + 1, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
save(seq, e)
redis.call('ZADD', K_WAIT, ARGV[2], seq)
log(seq, e, 'retrying', tonumber(ARGV[5]), e.a, e.ls, e.lm)
return 1
"""

# ARGV: seq, status ('' for none), message, now.
DEAD = """
local seq = ARGV[1]
local e = load(seq)
if not e or e.s ~= 'q' then return 0 end
unqueue(seq, e)
count_queued(seq, e, -1)
e.a, e.s, e.ls, e.lm, e.x = e.a + 1, 'd', tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
save(seq, e)
redis.call('ZADD', K_DEAD, seq, seq)
log(seq, e, 'dead', e.x, e.a, e.ls, e.lm)
count('dead', 1)
return 1
"""

# ARGV: seqs.
RELEASE = """
for i = 1, #ARGV do
  if redis.call('ZREM', K_LEASED, ARGV[i]) == 1 then
    local e = load(ARGV[i])
    if e then make_ready(ARGV[i], e) end
  end
end
return 0
"""

# ARGV: now, then either '', seqs (those ids) or a limit (the oldest dead, up to it).
REPLAY = """
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
"""

# ARGV: delivered_before, now, chunk. Returns {events deleted, entries handled (go on while
# any kind reached `chunk`), dedup keys deleted}. A second s holds deliveries in [s, s + 1):
# its count goes when s + 1 <= delivered_before.
PRUNE = """
local cutoff, chunk = tonumber(ARGV[1]), tonumber(ARGV[3])
local moved = roll_up(tonumber(ARGV[2]), chunk)
local exact = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', '(' .. ARGV[1], 'LIMIT', 0, chunk)
if #exact > 0 then redis.call('ZREM', K_DONE, unpack(exact)) end
local seconds = redis.call('ZRANGEBYSCORE', K_DONE_S, '-inf', num(cutoff - 1), 'LIMIT', 0, chunk)
local events = #exact
for _, second in ipairs(seconds) do
  events = events + (tonumber(redis.call('HGET', K_DONE_N, second)) or 0)
end
if #seconds > 0 then
  redis.call('ZREM', K_DONE_S, unpack(seconds))
  redis.call('HDEL', K_DONE_N, unpack(seconds))
end
count('delivered', -events)
if cutoff > (tonumber(redis.call('HGET', K_COUNTS, 'pruned_before')) or -math.huge) then
  redis.call('HSET', K_COUNTS, 'pruned_before', num(cutoff))
end
local expired = redis.call('ZRANGEBYSCORE', K_DEDUP, '-inf', ARGV[2], 'LIMIT', 0, chunk)
if #expired > 0 then redis.call('ZREM', K_DEDUP, unpack(expired)) end
return {events, math.max(moved, #exact, #seconds), #expired}
"""

NEXT_DUE = """
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
"""

# ARGV: limit. Returns seq, name, key, attempts, last status, last message, received, died.
DEAD_LETTERS = """
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
"""

# ARGV: after (a log entry id), count. Returns, per log entry after `after`: its id, 1 if the
# event was pruned (its delivery, among the entries read, came before a prune's cutoff) or
# else 0, then seq, state, at, name, key, attempts, last status, last message.
CHANGES = """
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
"""

# ARGV: now, number of events E, then E events of IMPORT_FIELDS entries (mark, status 'q' or
# 'd', priority, name, key, payload, received_at, next_attempt_at, attempts, last status,
# last message, died_at), then pairs of dedup key and expiry. An event whose mark is already
# in K_MIGRATED was moved by an earlier, interrupted run and is skipped.
IMPORT = """
local now, events = tonumber(ARGV[1]), tonumber(ARGV[2])
local imported, i = 0, 3
for _ = 1, events do
  if redis.call('HSETNX', K_MIGRATED, ARGV[i], 1) == 1 then
    local seq = redis.call('INCR', K_SEQ)
    local e = {s = ARGV[i + 1], p = tonumber(ARGV[i + 2]), n = ARGV[i + 3], k = ARGV[i + 4],
               b = ARGV[i + 5], r = tonumber(ARGV[i + 6]), t = tonumber(ARGV[i + 7]),
               a = tonumber(ARGV[i + 8]), ls = tonumber(ARGV[i + 9]), lm = ARGV[i + 10],
               x = tonumber(ARGV[i + 11])}
    save(seq, e)
    if e.s == 'd' then
      redis.call('ZADD', K_DEAD, seq, seq)
      count('dead', 1)
    else
      if e.t <= now then make_ready(seq, e) else redis.call('ZADD', K_WAIT, e.t, seq) end
      count_queued(seq, e, 1)
    end
    imported = imported + 1
  end
  i = i + 12
end
for j = i, #ARGV, 2 do
  redis.call('ZADD', K_DEDUP, 'GT', ARGV[j + 1], ARGV[j])
end
return imported
"""

# No ARGV. Returns, for conversions then page views: how many are queued, and the received_at
# of the oldest (false if none). First rebuilds the queued:* indexes from the sets if they do
# not add up to the queued count: Redis data written by a relay from before they existed.
QUEUE_FIGURES = """
local queued = tonumber(redis.call('HGET', K_COUNTS, 'queued')) or 0
if redis.call('ZCARD', K_QUEUED0) + redis.call('ZCARD', K_QUEUED1) ~= queued then
  redis.call('DEL', K_QUEUED0, K_QUEUED1)
  redis.call('ZUNIONSTORE', K_QUEUED0, 1, K_READY0)  -- scored by seq, as the ready sets are
  redis.call('ZUNIONSTORE', K_QUEUED1, 1, K_READY1)
  for _, key in ipairs({K_WAIT, K_LEASED}) do
    for _, seq in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local e = load(seq)
      if e then redis.call('ZADD', queued_key(e), seq, seq) end
    end
  end
end
local out = {}
for _, key in ipairs({K_QUEUED0, K_QUEUED1}) do
  local first = redis.call('ZRANGE', key, 0, 0)
  local e = first[1] and load(first[1])
  out[#out + 1] = redis.call('ZCARD', key)
  out[#out + 1] = e and num(e.r) or false
end
return out
"""

# KEYS: the registry. ARGV: a Space. Returns the Space's number, assigning the next one.
REGISTER = """
local n = redis.call('HGET', KEYS[1], 's:' .. ARGV[1])
if n then return tonumber(n) end
n = redis.call('HINCRBY', KEYS[1], 'last', 1)
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], n, 'n:' .. n, ARGV[1])
return n
"""


def _space_script(name: str, body: str) -> Script:
    return Script(name, PRELUDE + body)


SCRIPTS = {
    s.name: s
    for s in [
        _space_script("enqueue", ENQUEUE),
        _space_script("claim", CLAIM),
        _space_script("delivered", DELIVERED),
        _space_script("retry", RETRY),
        _space_script("dead", DEAD),
        _space_script("release", RELEASE),
        _space_script("replay", REPLAY),
        _space_script("prune", PRUNE),
        _space_script("next_due", NEXT_DUE),
        _space_script("dead_letters", DEAD_LETTERS),
        _space_script("import", IMPORT),
        _space_script("changes", CHANGES),
        _space_script("queue_figures", QUEUE_FIGURES),
        Script("register", REGISTER),
    ]
}


def event_id(number: int, seq: int) -> int:
    """The Outbox id of the event `seq` of the Space numbered `number`."""
    return number << SEQ_BITS | seq


def split_id(id_: int) -> tuple[int, int]:
    """(Space number, seq) of an Outbox id."""
    return id_ >> SEQ_BITS, id_ & SEQ_MASK


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisOutbox:
    """The Outbox on Redis; see `relay.store.base.Outbox` for the contract, and the module
    docstring for the keys and scripts.

    `url` is a redis:// or rediss:// URL (password, database number and query options as
    redis-py reads them). `prefix` starts every key name, so several relays' data can share
    one Redis. Start, use and close it in one event loop (see `RedisLink`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "comet",
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.close_timeout = close_timeout
        self.registry = f"{prefix}:spaces"
        self.link = RedisLink(
            url, SCRIPTS.values(), socket_timeout=socket_timeout, connect_timeout=connect_timeout
        )
        self._numbers: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._coalescer = Coalescer(self._flush)
        self._writes: set[asyncio.Task[None]] = set()

    # connection -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and load the scripts; idempotent. Raises Unavailable if Redis is not there
        or older than 6.2; logs a warning if its append-only file is off."""
        await self.link.start()
        info = await self.link.do(lambda r: r.info())
        version = tuple(int(part) for part in str(info.get("redis_version", "0")).split(".")[:2])
        if version < MIN_VERSION:
            await self.link.close()
            raise Unavailable(
                f"Redis {info.get('redis_version')} is too old for the outbox: it needs 6.2 or newer."
            )
        if not int(info.get("aof_enabled", 0)):
            log.warning(
                "Redis runs without its append-only file (appendonly no): accepted events can be "
                "lost if Redis crashes. Set appendonly yes and appendfsync always (or everysec)."
            )

    async def close(self) -> None:
        """Wait (at most `close_timeout`) for enqueues already sent, then disconnect."""
        loop = asyncio.get_running_loop()
        writes = {task for task in self._writes if task.get_loop() is loop}
        if writes:
            _, late = await asyncio.wait(writes, timeout=self.close_timeout)
            if late:
                log.error("%d outbox writes still waiting for Redis; leaving them", len(late))
        await self.link.close()

    async def _call(self, script: str, space: str, args: Sequence[Any]) -> Any:
        """Run one Space script; its result, or Unavailable."""
        return await self.link.call(SCRIPTS[script], self._keys(space), args)

    def _keys(self, space: str) -> list[str]:
        return [f"{self.prefix}:{{{space}}}:{name}" for name in SPACE_KEYS]

    # the Space registry -----------------------------------------------------------------

    async def _number(self, space: str) -> int:
        """The Space's number, registered on first use (a separate, global call)."""
        number = self._numbers.get(space)
        if number is None:
            number = int(await self.link.call(SCRIPTS["register"], [self.registry], [space]))
            if number > MAX_SPACES:
                raise Unavailable(f"Redis holds more than {MAX_SPACES} Spaces.")
            self._numbers[space], self._names[number] = number, space
        return number

    async def _spaces(self) -> list[str]:
        """Every Space registered by any relay, refreshing the caches."""
        fields = await self.link.do(lambda r: r.hgetall(self.registry))
        for field, value in fields.items():
            name = _text(field)
            if name.startswith("s:"):
                self._numbers[name[2:]] = int(value)
                self._names[int(value)] = name[2:]
        return sorted(self._numbers)

    async def _by_space(self, ids: Iterable[int]) -> dict[str, list[int]]:
        """Seqs grouped by Space name; ids of no known Space are dropped."""
        seqs: dict[int, list[int]] = defaultdict(list)
        for id_ in ids:
            number, seq = split_id(id_)
            seqs[number].append(seq)
        if any(number not in self._names for number in seqs):
            await self._spaces()
        return {self._names[n]: s for n, s in seqs.items() if n in self._names}

    # enqueue ------------------------------------------------------------------------------

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[bool]:
        """See `Outbox.enqueue`.

        The calls made in one event-loop tick share one pipeline: one enqueue script per
        Space, one round trip in all (after a Space's first, which registers it).
        """
        for e in events:
            if e.priority not in (PRIORITY_CONVERSION, PRIORITY_PAGE_VIEW):
                raise ValueError(f"unknown priority {e.priority!r} of event {e.idempotency_key}")
        self.link.client()  # not started: Unavailable now, not in the flush
        return await self._coalescer.submit(events, now)

    def _flush(self, pending: list[Pending]) -> None:
        task = asyncio.ensure_future(self._write(pending))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, pending: list[Pending]) -> None:
        try:
            batch = _Batch()
            places = [[batch.add(e, now) for e in events] for events, now, _ in pending]
            spaces = list(batch.parts)
            for space in spaces:
                await self._number(space)
            calls = [(SCRIPTS["enqueue"], self._keys(s), batch.args(s)) for s in spaces]
            by_space = dict(zip(spaces, await self.link.run(calls)))
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            fail_all(pending, exc if isinstance(exc, Unavailable) else Unavailable(f"Redis: {exc}"))
            return
        for (_, _, future), where in zip(pending, places):
            if not future.done():
                _answer(future, by_space, where)

    # claim and the steps after it ---------------------------------------------------------

    async def claim(self, space: str, n: int, lease_seconds: float, now: float) -> list[Claimed]:
        """See `Outbox.claim`; one script: promote what came due, then lease up to `n`."""
        if n <= 0:
            return []
        number = await self._number(space)
        lease_until = now + lease_seconds
        flat = await self._call("claim", space, [_arg(now), n, _arg(lease_until), PROMOTE])
        return [
            Claimed(
                id=event_id(number, int(flat[i])),
                space=space,
                event_name=_text(flat[i + 1]),
                idempotency_key=_text(flat[i + 2]),
                payload=bytes(flat[i + 5]),
                attempts=int(flat[i + 3]),
                received_at=float(flat[i + 4]),
                lease_until=lease_until,
            )
            for i in range(0, len(flat), 6)
        ]

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        """See `Outbox.delivered`; the event is dropped at once, only counted until pruned."""
        await self._each_space("delivered", ids, [_arg(now)])

    async def retry(self, id: int, at: float, status: int | None, message: str, now: float) -> None:
        """See `Outbox.retry`."""
        for space, (seq,) in (await self._by_space([id])).items():
            await self._call("retry", space, [seq, _arg(at), _arg(status), message, _arg(now)])

    async def dead(self, id: int, status: int | None, message: str, now: float) -> None:
        """See `Outbox.dead`."""
        for space, (seq,) in (await self._by_space([id])).items():
            await self._call("dead", space, [seq, _arg(status), message, _arg(now)])

    async def release(self, ids: Sequence[int]) -> None:
        """See `Outbox.release`."""
        await self._each_space("release", ids, [])

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """See `Outbox.replay`; all of them: CHUNK events per script until none is left."""
        if ids is not None:
            return sum(await self._each_space("replay", ids, [_arg(now), ""]))
        total = 0
        for space in await self._spaces():
            while (replayed := int(await self._call("replay", space, [_arg(now), CHUNK]))) > 0:
                total += replayed
        return total

    async def _each_space(self, script: str, ids: Sequence[int], head: list[Any]) -> list[int]:
        """Run `script` once per Space of `ids` (ARGV: `head`, then seqs), in one pipeline."""
        groups = await self._by_space(ids)
        calls = [(SCRIPTS[script], self._keys(s), [*head, *seqs]) for s, seqs in groups.items()]
        return [int(ok(r)) for r in await self.link.run(calls)]

    # upkeep and reading -------------------------------------------------------------------

    async def prune(self, delivered_before: float, now: float) -> int:
        """See `Outbox.prune`, exact for the last minute's deliveries and to the second before
        (see the module docstring); CHUNK entries of each kind per script."""
        total = 0
        for space in await self._spaces():
            while True:
                events, handled, keys = await self._call(
                    "prune", space, [_arg(delivered_before), _arg(now), CHUNK]
                )
                total += int(events)
                if int(handled) < CHUNK and int(keys) < CHUNK:
                    break
        return total

    async def next_due(self, space: str) -> float | None:
        """See `Outbox.next_due`; one read-only script."""
        due = await self._call("next_due", space, [])
        return None if due is None else float(due)

    async def dead_letters(self, limit: int = 1000) -> list[DeadEvent]:
        """See `Outbox.dead_letters`: oldest first (by received_at, then id) over all Spaces."""
        spaces = await self._spaces()
        calls = [(SCRIPTS["dead_letters"], self._keys(s), [limit]) for s in spaces]
        dead: list[DeadEvent] = []
        for space, result in zip(spaces, await self.link.run(calls)):
            flat = ok(result)
            number = self._numbers[space]
            dead += [_dead_event(number, space, flat[i : i + 8]) for i in range(0, len(flat), 8)]
        dead.sort(key=lambda d: (d.received_at, d.id))
        return dead[:limit]

    async def stats(self) -> OutboxStats:
        """See `Outbox.stats`: each Space's counts hash, in one pipeline."""
        spaces = await self._spaces()
        counts_keys = [self._keys(space)[SPACE_KEYS.index("counts")] for space in spaces]
        rows = await self.link.do(lambda r: _read_counts(r, counts_keys))
        stats = OutboxStats()
        for space, row in zip(spaces, rows):
            counts = {bucket: int(n or 0) for bucket, n in zip(BUCKETS, row)}
            if any(counts.values()):
                stats.spaces[space] = counts
                for bucket, n in counts.items():
                    setattr(stats, bucket, getattr(stats, bucket) + n)
        return stats

    async def queue_figures(self) -> QueueFigures:
        """See `QueueAges.queue_figures`: one script per Space, all in one pipeline, each
        reading the size and the first member of the Space's two queued:* indexes (and one
        event each for its received_at), so a scrape costs O(Spaces x log queued).

        Events queued by a relay from before the indexes existed are added to them by the
        first call that finds them missing, in one O(queued) script per Space.
        """
        spaces = await self._spaces()
        none: list[Any] = []
        calls = [(SCRIPTS["queue_figures"], self._keys(s), none) for s in spaces]
        figures = QueueFigures()
        for space, result in zip(spaces, await self.link.run(calls)):
            flat = ok(result)
            for priority, depth, oldest in (
                (PRIORITY_CONVERSION, flat[0], flat[1]), (PRIORITY_PAGE_VIEW, flat[2], flat[3])
            ):
                if int(depth) > 0:
                    figures.depth[(space, priority)] = int(depth)
                    if oldest is not None:
                        figures.oldest[(space, priority)] = float(oldest)
        return figures

    # following: ChangeFeed --------------------------------------------------------------

    async def changes(self, after: str | None, limit: int = 1000) -> ChangePage:
        """See `ChangeFeed.changes`: each Space's step log, merged in Redis's commit order.

        The cursor is JSON: each Space's last log entry read. Steps of an event that prune
        has dropped are skipped when its delivery is among the entries read with them.
        """
        spaces = await self._spaces()
        if after is None:
            return ChangePage(
                [], _cursor(await self.link.do(lambda r: _log_ends(r, self._logs(spaces))))
            )
        read = _parse_cursor(after)
        calls = [(SCRIPTS["changes"], self._keys(s), [read.get(s, "0-0"), limit]) for s in spaces]
        logs = {s: ok(result) for s, result in zip(spaces, await self.link.run(calls))}
        page = _Page(read, limit, _horizon(logs, limit))
        for space, flat, i in sorted(_entries(logs), key=lambda x: _entry_id(x[1][x[2]])):
            if not page.take(space, flat[i : i + LOG_FIELDS], self._numbers[space]):
                break
        return page.done()

    def _logs(self, spaces: list[str]) -> list[tuple[str, str]]:
        return [(s, self._keys(s)[SPACE_KEYS.index("log")]) for s in spaces]

    # migration ----------------------------------------------------------------------------

    async def import_events(
        self,
        space: str,
        events: Sequence[ImportedEvent],
        keys: Sequence[tuple[str, float]],
        now: float,
    ) -> int:
        """Add queued or dead events of `space` with their history, and dedup keys; atomic.

        For `relay.store.migrate`. An event whose `mark` was imported before is skipped, so
        an interrupted migration can be run again; returns how many were added. A dedup key
        keeps the later of its two expiries.
        """
        await self._number(space)
        args: list[Any] = [_arg(now), len(events)]
        for e in events:
            args += e.args()
        for key, until in keys:
            args += [key, _arg(until)]
        return int(await self._call("import", space, args))

    async def forget_imports(self, spaces: Iterable[str]) -> None:
        """Drop the import marks of `spaces`, once their migration is complete."""
        marks = [self._keys(s)[SPACE_KEYS.index("migrated")] for s in spaces]
        if marks:
            await self.link.do(lambda r: r.delete(*marks))


@dataclass(frozen=True)
class ImportedEvent:
    """A queued or dead event as another backend held it, for `RedisOutbox.import_events`.

    `mark` names it uniquely in its source (for example the source's id and its key).
    """

    mark: str
    dead: bool
    priority: int
    event_name: str
    idempotency_key: str
    payload: bytes
    received_at: float
    next_attempt_at: float
    attempts: int
    last_status: int | None
    last_message: str
    died_at: float | None

    def args(self) -> list[Any]:
        """The event's IMPORT_FIELDS entries of the import script's ARGV."""
        return [
            self.mark, "d" if self.dead else "q", self.priority, self.event_name,
            self.idempotency_key, self.payload, _arg(self.received_at),
            _arg(self.next_attempt_at), self.attempts, _arg(self.last_status),
            self.last_message, _arg(self.died_at),
        ]  # fmt: skip


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    """A stream entry id ("ms-n") as a sortable pair."""
    ms, _, n = _text(raw).partition("-")
    return int(ms), int(n or 0)


def _cursor(read: dict[str, str]) -> str:
    return json.dumps(read, sort_keys=True, separators=(",", ":"))


def _parse_cursor(cursor: str) -> dict[str, str]:
    try:
        read = json.loads(cursor)
        if not isinstance(read, dict) or not all(isinstance(v, str) for v in read.values()):
            raise ValueError
    except ValueError:
        raise ValueError(f"not a cursor of the Redis outbox: {cursor!r}") from None
    return read


async def _log_ends(client: aioredis.Redis, logs: list[tuple[str, str]]) -> dict[str, str]:
    """Each Space's last log entry id ("0-0" for an empty log), in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for _, key in logs:
            pipe.xrevrange(key, count=1)
        lasts = await pipe.execute()
    return {space: _text(last[0][0]) if last else "0-0" for (space, _), last in zip(logs, lasts)}


def _entries(logs: dict[str, list[Any]]) -> Iterable[tuple[str, list[Any], int]]:
    """(Space, its flat answer, where an entry starts) for every entry read."""
    for space, flat in logs.items():
        for i in range(0, len(flat), LOG_FIELDS):
            yield space, flat, i


def _horizon(logs: dict[str, list[Any]], limit: int) -> tuple[int, int] | None:
    """The last entry id every Space was read up to: a Space that filled its `limit` may have
    older entries waiting than another's, so no page goes past its last one read."""
    full = [
        _entry_id(flat[-LOG_FIELDS]) for flat in logs.values() if len(flat) >= limit * LOG_FIELDS
    ]
    return min(full) if full else None


class _Page:
    """A page of `changes` being filled in commit order: up to `limit` acceptances and up to
    `limit` later steps, each Space's entries taken as a prefix, so the cursor skips none."""

    def __init__(self, read: dict[str, str], limit: int, horizon: tuple[int, int] | None) -> None:
        self.read = dict(read)
        self.limit = limit
        self.horizon = horizon
        self.accepted: list[Change] = []
        self.steps: list[Change] = []

    def take(self, space: str, f: list[Any], number: int) -> bool:
        """Add one log entry (unless its event was pruned); False when the page is full."""
        entry_id, pruned, seq, state, at, name, key, attempts, status, message = f
        if self.horizon is not None and _entry_id(entry_id) > self.horizon:
            return False
        state = _text(state)
        kind = self.accepted if state == "accepted" else self.steps
        if len(kind) >= self.limit:
            return False
        self.read[space] = _text(entry_id)
        if not int(pruned):
            kind.append(Change(
                at=float(at), id=event_id(number, int(seq)), space=space,
                event_name=_text(name), idempotency_key=_text(key), state=state,
                attempts=int(attempts), last_status=int(status) if status else None,
                last_message=_text(message),
            ))  # fmt: skip
        return True

    def done(self) -> ChangePage:
        return ChangePage(self.accepted + self.steps, _cursor(self.read))


class _Batch:
    """The enqueue script's packed events per Space, for the calls of one tick."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}

    def add(self, e: NewEvent, now: float) -> tuple[str, int]:
        """Pack `e` for its Space's script; where its answer will be: (Space, position)."""
        strings = [e.event_name.encode(), e.idempotency_key.encode(), e.payload]
        strings += [key.encode() for key in e.dedup_keys]
        parts = self.parts.setdefault(e.space, [])
        parts.append(
            EVENT_HEAD.pack(now, e.received_at, e.dedup_until, e.priority, len(e.dedup_keys))
        )
        for string in strings:
            parts += (LENGTH.pack(len(string)), string)
        position = self.counts.get(e.space, 0)
        self.counts[e.space] = position + 1
        return e.space, position

    def args(self, space: str) -> list[bytes]:
        """The enqueue script's ARGV for `space`."""
        return [b"".join(self.parts[space])]


def _answer(
    future: asyncio.Future[list[bool]], by_space: dict[str, Any], places: list[tuple[str, int]]
) -> None:
    failed = next((r for s, _ in places if isinstance(r := by_space[s], Exception)), None)
    if failed is not None:
        future.set_exception(Unavailable(f"Redis refused the enqueue: {failed}"))
    else:
        future.set_result([by_space[space][i] == ord("1") for space, i in places])


async def _read_counts(client: aioredis.Redis, keys: list[str]) -> list[list[Any]]:
    """The BUCKETS of each counts hash in `keys`, in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, *BUCKETS)
        return await pipe.execute()  # type: ignore[no-any-return]


def _dead_event(number: int, space: str, f: list[Any]) -> DeadEvent:
    return DeadEvent(
        id=event_id(number, int(f[0])),
        space=space,
        event_name=_text(f[1]),
        idempotency_key=_text(f[2]),
        attempts=int(f[3]),
        last_status=None if f[4] is None else int(f[4]),
        last_message=_text(f[5]),
        received_at=float(f[6]),
        died_at=float(f[7]),
    )
