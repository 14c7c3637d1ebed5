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

Scripts (lua/, loaded by scripts.py): every per-Space script gets the seventeen keys above, in
that order, as KEYS, and touches no other key, so a Space's script runs in its slot on a
Cluster. Each file's head says which of the keys it uses, its ARGV and its answer.

The one global key, `comet:spaces` (hash: `s:<space>` -> number, `n:<number>` -> space,
`last`), is touched only by its own `register` script, once per Space and process (cached),
never inside a Space's script. Stats, queue figures, dead letters, replay-all and prune list
the Spaces there. An event's id is its Space's number and its seq (ids.py).

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

    outbox.py   RedisOutbox: the Outbox methods
    scripts.py  the scripts of lua/ and the order of the Space's keys
    batch.py    events as the enqueue and import scripts take them
    changes.py  the `changes` feed: merging the Spaces' logs, the cursor
    ids.py      Outbox ids: Space number and seq
"""

from __future__ import annotations

from relay.store.redis.batch import ImportedEvent
from relay.store.redis.ids import SEQ_BITS, event_id, split_id
from relay.store.redis.outbox import RedisOutbox

__all__ = ["SEQ_BITS", "ImportedEvent", "RedisOutbox", "event_id", "split_id"]
