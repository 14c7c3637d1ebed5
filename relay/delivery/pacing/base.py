"""Pacing of upstream requests per Space, shared by every forwarder that delivers the Space.

A Space's upstream accepts `upstream_rate_per_minute` requests; its forwarders must start them
at least `interval = 60 / rate` seconds apart, all forwarders together. A pacer hands out
start times: `reserve` gives the caller the next free slot and moves the Space's next slot one
interval on, atomically, so two forwarders never get the same slot; `reserve_batch` does so
for n slots in one step. `hold` pushes the next
slot later (the upstream's Retry-After, a pause after 401/403, a backoff).

`memory.MemoryPacer` serves the forwarders of one process (tests); `sqlite.SQLitePacer` those
of every process on one SQLite file; `redis.RedisPacer` those of every relay on one Redis (one key per Space, `comet:{S}:pace`, in the Space's Cluster slot). Times are the
callers' clocks (Unix seconds), so relays on several machines need synchronised clocks (NTP);
a skew of d seconds shifts one start by at most d.
"""

from __future__ import annotations

from typing import Protocol

from relay.lifecycle import Runs


class Pacer(Runs, Protocol):
    """Start times for a Space's upstream requests; started and closed by `async with`."""

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """The time this caller may start its request: max(now, the Space's next slot).

        The next slot becomes that time + `interval`. Sleep until the returned time, then
        start the request; every reserved slot is used or lost, never given twice.
        """
        ...

    async def reserve_batch(self, space: str, interval: float, n: int, now: float) -> list[float]:
        """`n` start times `interval` apart, in one atomic step: as `n` calls of `reserve`.

        The first is max(now, the Space's next slot); the next slot becomes the last + interval.
        A forwarder reserves the starts of the events it holds at once, so the pace costs one
        write per batch, not per request.
        """
        ...

    async def hold(self, space: str, until: float, now: float) -> None:
        """No slot of `space` before `until` (slots already handed out are kept)."""
        ...

    async def next_slot(self, space: str) -> float:
        """When the Space's next slot is (0 if none was ever reserved), reserving nothing."""
        ...


def slots(first: float, interval: float, n: int) -> list[float]:
    """`n` start times from `first`, `interval` apart: what `Pacer.reserve_batch` returns."""
    return [first + i * interval for i in range(n)]
