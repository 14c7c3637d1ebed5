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
    comet:{S}:ev       hash    seq -> the event, MessagePack: name n, key k, payload b,
                               priority p, source o ("api" or "browser"), twin w (the payload
                               of the browser twin an API event met), d (a browser event's
                               dedup keys, for the API twin that takes it over), received_at
                               r, next_attempt_at t, attempts a, status s (queued or dead),
                               last status and message, died_at
    comet:{S}:ready:0  zset    due API conversions, unleased; score = seq (claim order: oldest)
    comet:{S}:ready:1  zset    due browser conversions, the same
    comet:{S}:ready:2  zset    due page views, the same
    comet:{S}:readyat  zset    the members of the three ready sets; score = next_attempt_at
    comet:{S}:wait     zset    queued, unleased events due later (retries, and conversions
                               held for their twin); score = due time
    comet:{S}:leased   zset    claimed events; score = lease expiry
    comet:{S}:dead     zset    dead letters; score = seq
    comet:{S}:done     zset    events delivered in the last minute; score = delivered_at
    comet:{S}:done:s   zset    earlier seconds in which events were delivered; score = second
    comet:{S}:done:n   hash    such a second -> how many events were delivered in it
    comet:{S}:dedup    zset    dedup keys ("idem:NAME:KEY", "order:NAME:ORDER"); score =
                               expiry (dedup_until)
    comet:{S}:dedup:ev hash    dedup key -> "SEQ|SOURCE|KEY": the event it ended in (SEQ empty
                               if that event was never in this Redis), that event's source and
                               idempotency key (the `other` of a later duplicate or merge,
                               even after the event was delivered and dropped)
    comet:{S}:counts   hash    queued, retrying, delivered, dead: kept by the scripts; and
                               pruned_before, the latest cutoff of prune (for `changes`)
    comet:{S}:migrated hash    marks of events moved in by `relay.store.migrate` -> their seq
    comet:{S}:log      stream  each step (accepted, retrying, delivered, dead, replayed) with
                               the event's name and key, for `changes`; trimmed to the last
                               hour by Redis's clock (about 100 bytes a step)
    comet:{S}:queued:0 zset    every queued API conversion, wherever it is (ready, wait or
                               leased); score = seq, so its first is the oldest (metrics)
    comet:{S}:queued:1 zset    every queued browser conversion, the same
    comet:{S}:queued:2 zset    every queued page view, the same
    comet:{S}:meta     hash    layout: "2", this model; legacy_until: see Upgrades

A queued event is in exactly one of: a ready set (plus readyat), wait, or leased. A delivered
event is dropped at once (Redis memory is RAM) and only counted until pruned: in `done` for a
minute, then (moved by later deliveries and by prune) in its second's count, so a week of
retention costs at most 604,800 small entries, however busy the shop. `prune` is exact for
events delivered in the minute before; older ones go by whole seconds (a second holding the
cutoff waits for the next prune). It drops expired dedup keys from both dedup structures.

Twins (relay.rules.twins) merge inside the enqueue script (lua/enqueue.lua, the rules of
`Outbox.enqueue`), so two relays can never both merge into, or both take over, one event: an
API event that takes over its browser twin rewrites the twin's keys (its `d`) to name it as an
API event, and moves it to priority 0 (a page view stays at 2).

Upgrades: a Space written by a relay from before trust tiers (layout 1: two priorities, 1 the
page views; events without a source; dedup keys naming no event, and "idem:KEY" without the
event name) has no `meta`. The first script of any relay to touch the Space upgrades it, inside
itself, so atomically and in O(1) (lua/layout.lua): ready:1 and queued:1 become ready:2 and
queued:2; an event without a source is read as an API event, its priority 1 as a page view;
an "order:" key without an entry in dedup:ev names an API event no longer known; and until
the last old key expires (legacy_until), an event whose "idem:NAME:KEY" names nothing is still
a duplicate of an old "idem:KEY", as before. Relays of both layouts must not run together.

Scripts (lua/, loaded by scripts.py): every per-Space script (prelude.lua and layout.lua, then
its own file) gets the twenty-one keys above, in that order, as KEYS, and touches no other key,
so a Space's script runs in its slot on a Cluster. Each file's head says which of the keys it
uses, its ARGV and its answer.

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
    batch.py    events as the enqueue and import scripts take them, and the enqueue's answers
    changes.py  the `changes` feed: merging the Spaces' logs, the cursor
    ids.py      Outbox ids: Space number and seq
"""

from __future__ import annotations

from relay.store.redis.batch import ImportedEvent, ImportedKey
from relay.store.redis.ids import SEQ_BITS, event_id, split_id
from relay.store.redis.outbox import RedisOutbox

__all__ = ["SEQ_BITS", "ImportedEvent", "ImportedKey", "RedisOutbox", "event_id", "split_id"]
