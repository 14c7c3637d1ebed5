"""The pacer shared by every relay on one Redis: one key per Space, `comet:{S}:pace`, in the
Space's Cluster slot, moved by one Lua script (pace.lua)."""

from __future__ import annotations

from relay.delivery.pacing.base import slots
from relay.lifecycle import Lifecycle
from relay.redis_link import RedisLink, load_script, number

PACE = load_script("relay.delivery.pacing", "pace.lua")


class RedisPacer(Lifecycle):
    """The pacer shared by every relay on one Redis; one script call per `reserve`, `reserve_batch` or `hold`.

    Call `start` before use and `close` at shutdown.
    """

    def __init__(self, url: str, *, prefix: str = "comet", socket_timeout: float = 2.0) -> None:
        self.prefix = prefix
        self.link = RedisLink(url, [PACE], socket_timeout=socket_timeout)

    async def start(self) -> None:
        """Connect and load the script; Unavailable if Redis is not there."""
        await self.link.start()

    async def close(self) -> None:
        """Disconnect; idempotent."""
        await self.link.close()

    def _key(self, space: str) -> str:
        return f"{self.prefix}:{{{space}}}:pace"

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """See `Pacer.reserve`."""
        start = await self.link.call(
            PACE, [self._key(space)], ["reserve", number(now), number(interval)]
        )
        return float(start)

    async def reserve_batch(self, space: str, interval: float, n: int, now: float) -> list[float]:
        """See `Pacer.reserve_batch`; one script call for all `n`."""
        start = await self.link.call(
            PACE, [self._key(space)], ["reserve", number(now), number(interval), str(n)]
        )
        return slots(float(start), interval, n)

    async def hold(self, space: str, until: float, now: float) -> None:
        """See `Pacer.hold`."""
        await self.link.call(PACE, [self._key(space)], ["hold", number(now), number(until)])

    async def next_slot(self, space: str) -> float:
        """See `Pacer.next_slot`."""
        stored = await self.link.do(lambda r: r.get(self._key(space)))
        return 0.0 if stored is None else float(stored)
