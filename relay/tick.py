"""Batching the calls of one event-loop tick into one write or one round trip.

Requests arrive concurrently, and each makes its own call (an enqueue, a rate-limit take). A
backend that served each call alone would pay a commit (SQLite) or a round trip (Redis) per
request. A `TickBatch` collects the calls made during one turn of the event loop and hands
them to the backend's `flush` together on the next turn; each caller awaits its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Pending = list[tuple[T, asyncio.Future[R]]]


class TickBatch(Generic[T, R]):
    """Collects `submit(item)` calls until the loop's next turn, then calls `flush(pending)`.

    `flush` gets every (item, future) of the turn and must settle each future (a result or an
    exception), at once or later; `fail_all` settles the ones left.
    """

    def __init__(self, flush: Callable[[Pending[T, R]], None]) -> None:
        self._flush = flush
        self._pending: Pending[T, R] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        """Add `item` to this turn's batch and wait for its answer."""
        loop = self._loop
        if loop is None or not self._pending:  # the first of this turn: flush on the next one
            # Asked once a turn, not per call: get_running_loop costs a getpid system call.
            # Later calls of the turn run on the same loop, the one the flush is due on.
            loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._take)
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        return await future

    def _take(self) -> None:
        pending, self._pending = self._pending, []
        self._flush(pending)


def fail_all(pending: Pending[T, R], exc: BaseException) -> None:
    """Answer every call of `pending` that is still waiting with `exc`."""
    for _, future in pending:
        if not future.done():
            future.set_exception(exc)
