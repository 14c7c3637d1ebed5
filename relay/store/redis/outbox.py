"""`RedisOutbox`: the Outbox methods on Redis (see the package docstring for the data model).

Each method runs the scripts of lua/ (see scripts.py): one per Space it touches, several
Spaces' in one pipeline where it can, and the Space registry's own script on a Space's first
use.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from redis import asyncio as aioredis

from relay.errors import Unavailable
from relay.redis_link import RedisLink, ok
from relay.redis_link import number as _arg
from relay.rules.events import PRIORITIES, NewEvent, Source
from relay.store.base import (
    ChangePage,
    Claimed,
    DeadEvent,
    Enqueues,
    OutboxStats,
    QueueFigures,
    TickBatchedOutbox,
)
from relay.store.redis.batch import Batch, ImportedEvent, ImportedKey, answer
from relay.store.redis.changes import cursor, log_ends, merge, parse_cursor
from relay.store.redis.ids import MAX_SPACES, event_id, split_id
from relay.store.redis.scripts import SCRIPTS, SPACE_KEYS, text
from relay.tick import fail_all

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2)  # ZADD GT, XADD MINID, exclusive XRANGE
CHUNK = 1000  # events or keys per prune/replay script, so no script holds Redis for long
PROMOTE = 1000  # due retries and expired leases made claimable per claim, at most
BUCKETS = ("queued", "retrying", "delivered", "dead")


class RedisOutbox(TickBatchedOutbox):
    """The Outbox on Redis; see `relay.store.base.Outbox` for the contract, and the package
    docstring (relay.store.redis) for the keys and scripts.

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
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.close_timeout = close_timeout
        self.registry = f"{prefix}:spaces"
        self.link = RedisLink(
            url, SCRIPTS.values(), socket_timeout=socket_timeout, connect_timeout=connect_timeout
        )
        self._numbers: dict[str, int] = {}
        self._names: dict[int, str] = {}
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
            name = text(field)
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

    # `enqueue` (TickBatchedOutbox): the rules are lua/enqueue.lua's, so each is atomic. The
    # calls made in one event-loop tick share one pipeline: one enqueue script per Space, one
    # round trip in all (after a Space's first, which registers it).

    def _check(self, events: Sequence[NewEvent]) -> None:
        for e in events:
            if e.priority not in PRIORITIES:
                raise ValueError(f"unknown priority {e.priority!r} of event {e.idempotency_key}")
        self.link.client()  # not started: Unavailable now, not in the flush

    def _flush(self, pending: Enqueues) -> None:
        task = asyncio.ensure_future(self._write(pending))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, pending: Enqueues) -> None:
        try:
            batch = Batch()
            places = [[batch.add(e, now) for e in events] for (events, now), _ in pending]
            spaces = list(batch.parts)
            for space in spaces:
                await self._number(space)
            calls = [(SCRIPTS["enqueue"], self._keys(s), batch.args(s)) for s in spaces]
            by_space = dict(zip(spaces, await self.link.run(calls)))
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            fail_all(pending, exc if isinstance(exc, Unavailable) else Unavailable(f"Redis: {exc}"))
            return
        for (_, future), where in zip(pending, places):
            if not future.done():
                answer(future, by_space, where)

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
                event_name=text(flat[i + 1]),
                idempotency_key=text(flat[i + 2]),
                payload=bytes(flat[i + 5]),
                attempts=int(flat[i + 3]),
                received_at=float(flat[i + 4]),
                lease_until=lease_until,
                source=Source(text(flat[i + 6])),
                twin=None if flat[i + 7] is None else bytes(flat[i + 7]),
            )
            for i in range(0, len(flat), 8)
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
        (see the package docstring); CHUNK entries of each kind per script."""
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
        reading the size and the first member of the Space's three queued:* indexes (and one
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
            for priority, depth, oldest in zip(PRIORITIES, flat[0::2], flat[1::2], strict=True):
                if int(depth) > 0:
                    figures.depth[(space, priority)] = int(depth)
                    if oldest is not None:
                        figures.oldest[(space, priority)] = float(oldest)
        return figures

    # following: ChangeFeed --------------------------------------------------------------

    async def changes(self, after: str | None, limit: int = 1000) -> ChangePage:
        """See `ChangeFeed.changes`: each Space's step log, merged in Redis's commit order;
        the cursor is JSON, each Space's last log entry read (see changes.py)."""
        spaces = await self._spaces()
        if after is None:
            return ChangePage(
                [], cursor(await self.link.do(lambda r: log_ends(r, self._logs(spaces))))
            )
        read = parse_cursor(after)
        calls = [(SCRIPTS["changes"], self._keys(s), [read.get(s, "0-0"), limit]) for s in spaces]
        logs = {s: ok(result) for s, result in zip(spaces, await self.link.run(calls))}
        return merge(read, logs, limit, self._numbers)

    def _logs(self, spaces: list[str]) -> list[tuple[str, str]]:
        return [(s, self._keys(s)[SPACE_KEYS.index("log")]) for s in spaces]

    # migration ----------------------------------------------------------------------------

    async def import_events(
        self,
        space: str,
        events: Sequence[ImportedEvent],
        keys: Sequence[ImportedKey],
        now: float,
    ) -> int:
        """Add queued or dead events of `space` with their history and the dedup keys that
        name them, and dedup keys whose event is not imported (`keys`); atomic.

        For `relay.store.migrate`. An event whose `mark` was imported before is skipped (its
        keys came with it), so an interrupted migration can be run again; returns how many
        were added. A dedup key keeps the later of its two expiries; one of `keys` does not
        change the event an existing key names.
        """
        await self._number(space)
        args: list[Any] = [_arg(now), len(events)]
        for e in events:
            args += e.args()
        for key in keys:
            args += key.args()
        return int(await self._call("import", space, args))

    async def forget_imports(self, spaces: Iterable[str]) -> None:
        """Drop the import marks of `spaces`, once their migration is complete."""
        marks = [self._keys(s)[SPACE_KEYS.index("migrated")] for s in spaces]
        if marks:
            await self.link.do(lambda r: r.delete(*marks))



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
        event_name=text(f[1]),
        idempotency_key=text(f[2]),
        attempts=int(f[3]),
        last_status=None if f[4] is None else int(f[4]),
        last_message=text(f[5]),
        received_at=float(f[6]),
        died_at=float(f[7]),
    )
