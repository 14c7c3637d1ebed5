"""Coalescing the enqueues of one event-loop tick into one write.

Requests arrive concurrently; each calls `enqueue` with one event. A backend that writes each
call on its own pays one commit (SQLite) or one round trip (Redis) per request. `Coalescer`
collects the calls made in one tick and hands them to the backend's `flush` together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from relay.store.base import NewEvent

Pending = tuple[list[NewEvent], float, "asyncio.Future[list[bool]]"]  # events, now, answer


class Coalescer:
    """Collects `submit` calls until the loop's next turn, then calls `flush(pending)` once.

    `flush` must settle every future of `pending` (result or exception), at once or later.
    """

    def __init__(self, flush: Callable[[list[Pending]], None]) -> None:
        self._flush = flush
        self._pending: list[Pending] = []

    async def submit(self, events: Sequence[NewEvent], now: float) -> list[bool]:
        """Queue one enqueue call for the next flush and wait for its answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._pending.append((list(events), now, future))
        if len(self._pending) == 1:
            loop.call_soon(self._take)
        return await future

    def _take(self) -> None:
        pending, self._pending = self._pending, []
        self._flush(pending)


def fail_all(pending: list[Pending], exc: BaseException) -> None:
    """Answer every call of `pending` that is still waiting with `exc`."""
    for _, _, future in pending:
        if not future.done():
            future.set_exception(exc)
