"""`async with` for the parts that connect and disconnect: outboxes, rate limiters, pacers.

A part subclasses `Lifecycle` and implements `start` and `close`; `async with part:` starts it
and closes it again however the block ends, as an httpx transport does. `close` must be
idempotent and safe after a `start` that failed half-way.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


class Runs(Protocol):
    """The interface of a part with a lifecycle, for the protocols of each family
    (`Outbox`, `RateLimiter`, `Pacer`) to extend."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class Lifecycle:
    """Start on entering `async with`, close on leaving it."""

    async def start(self) -> None:
        """Connect and create what is missing; idempotent. Nothing to do by default."""

    async def close(self) -> None:
        """Finish what was submitted and disconnect, within a bounded time; idempotent."""

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
