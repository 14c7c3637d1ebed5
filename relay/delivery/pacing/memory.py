"""The pacer of one process: a dict of next slots (see `relay.delivery.pacing.base.Pacer`)."""

from __future__ import annotations

from relay.delivery.pacing.base import slots
from relay.lifecycle import Lifecycle


class MemoryPacer(Lifecycle):
    """The pacer of one process: a dict of next slots."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """See `Pacer.reserve`."""
        start = max(now, self._next.get(space, 0.0))
        self._next[space] = start + interval
        return start

    async def reserve_batch(self, space: str, interval: float, n: int, now: float) -> list[float]:
        """See `Pacer.reserve_batch`."""
        start = max(now, self._next.get(space, 0.0))
        self._next[space] = start + n * interval
        return slots(start, interval, n)

    async def hold(self, space: str, until: float, now: float) -> None:
        """See `Pacer.hold`."""
        self._next[space] = max(until, self._next.get(space, 0.0))

    async def next_slot(self, space: str) -> float:
        """See `Pacer.next_slot`."""
        return self._next.get(space, 0.0)
