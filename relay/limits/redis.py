"""The shared rate limiter: token buckets in Redis, so every relay spends one allowance.

The same bucket as `relay.limits.memory.MemoryRateLimiter` (at most `limit` tokens, refilled at
`limit` per minute; the same `Decision` numbers), kept in one Redis hash per key
(`comet:rl:<key>`: tokens and the time they were counted) and updated by one Lua script, so two
relays taking at the same moment never both spend the last token. A bucket's key expires once
it would have refilled, so idle keys (client addresses) cost no memory.

Time: with `clock=None` (the default) the script reads Redis's own clock, so relays on
machines whose clocks differ still share one bucket fairly. Tests inject a clock.

The methods are coroutines: a network round trip cannot be made synchronously inside the
event loop. If Redis cannot be reached they raise `relay.errors.Unavailable` (the
endpoints answer 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from relay.errors import Unavailable
from relay.lifecycle import Lifecycle
from relay.limits.base import Decision, decision
from relay.redis_link import Call, RedisLink, load_script, number, ok
from relay.tick import Pending, TickBatch

BUCKET = load_script("relay.limits", "bucket.lua")


class RedisRateLimiter(Lifecycle):
    """Token buckets shared by every relay on one Redis; async `take` and `peek`.

    `url` as for the outbox (`database = "redis://..."`); `prefix` starts the key names.
    Call `start` before use and `close` at shutdown.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        prefix: str = "comet",
        socket_timeout: float = 2.0,
    ) -> None:
        self.clock = clock
        self.prefix = prefix
        self.link = RedisLink(url, [BUCKET], socket_timeout=socket_timeout)
        # The calls of one event-loop tick share a pipeline: one round trip, not one each.
        self._batch: TickBatch[Call, Any] = TickBatch(self._send)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect and load the script; Unavailable if Redis is not there."""
        await self.link.start()

    async def close(self) -> None:
        """Disconnect; idempotent."""
        await self.link.close()

    async def take(self, key: str, limit_per_minute: int, cost: int = 1) -> Decision:
        """Spend `cost` of `key`'s allowance, if that much is left (one round trip, shared
        with the other calls of the same event-loop tick)."""
        return await self._bucket(key, limit_per_minute, cost)

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        """What `take` would report, without spending anything."""
        return await self._bucket(key, limit_per_minute, 0)

    async def _bucket(self, key: str, limit: int, cost: int) -> Decision:
        if limit <= 0:
            raise ValueError(f"a rate limit must be positive, got {limit}")
        now = None if self.clock is None else self.clock()
        call: Call = (BUCKET, [f"{self.prefix}:rl:{key}"], [limit, number(now), cost])
        result = await self._batch.submit(call)
        if isinstance(result, Unavailable):  # Redis could not be reached: say just that
            raise result
        allowed, tokens = ok(result)
        return decision(bool(allowed), limit, float(tokens), max(cost, 1))

    def _send(self, pending: Pending[Call, Any]) -> None:
        task = asyncio.ensure_future(self._run(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pending: Pending[Call, Any]) -> None:
        """One pipeline (one round trip) for every bucket call of one event-loop tick."""
        try:
            results = await self.link.run([call for call, _ in pending])
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            results = [exc] * len(pending)
        for (_, future), result in zip(pending, results):
            if not future.done():
                future.set_result(result)
