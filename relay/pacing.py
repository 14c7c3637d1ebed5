"""Pacing of upstream requests per Space, shared by every forwarder that delivers the Space.

A Space's upstream accepts `upstream_rate_per_minute` requests; its forwarders must start them
at least `interval = 60 / rate` seconds apart, all forwarders together. A pacer hands out
start times: `reserve` gives the caller the next free slot and moves the Space's next slot one
interval on, atomically, so two forwarders never get the same slot. `hold` pushes the next
slot later (the upstream's Retry-After, a pause after 401/403, a backoff).

`MemoryPacer` serves the forwarders of one process (tests); `SQLitePacer`
(relay.pacing_sqlite) those of every process on one SQLite file; `RedisPacer` those of every
relay on one Redis (one key per Space, `comet:{S}:pace`, in the Space's Cluster slot). Times are the
callers' clocks (Unix seconds), so relays on several machines need synchronised clocks (NTP);
a skew of d seconds shifts one start by at most d.
"""

from __future__ import annotations

from typing import Protocol

from relay.redis_link import RedisLink, Script, number


class Pacer(Protocol):
    """Start times for a Space's upstream requests."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """The time this caller may start its request: max(now, the Space's next slot).

        The next slot becomes that time + `interval`. Sleep until the returned time, then
        start the request; every reserved slot is used or lost, never given twice.
        """
        ...

    async def hold(self, space: str, until: float, now: float) -> None:
        """No slot of `space` before `until` (slots already handed out are kept)."""
        ...

    async def next_slot(self, space: str) -> float:
        """When the Space's next slot is (0 if none was ever reserved), reserving nothing."""
        ...


class MemoryPacer:
    """The pacer of one process: a dict of next slots."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    async def start(self) -> None:
        """Nothing to start: the slots live in this process."""

    async def close(self) -> None:
        """Nothing to close."""

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """See `Pacer.reserve`."""
        start = max(now, self._next.get(space, 0.0))
        self._next[space] = start + interval
        return start

    async def hold(self, space: str, until: float, now: float) -> None:
        """See `Pacer.hold`."""
        self._next[space] = max(until, self._next.get(space, 0.0))

    async def next_slot(self, space: str) -> float:
        """See `Pacer.next_slot`."""
        return self._next.get(space, 0.0)


# KEYS: the Space's pace key. ARGV: 'reserve', now, interval or 'hold', now, until. Returns
# the start granted (for 'hold', now). The key lives a minute past its slot, then it is moot.
PACE = Script(
    "pace",
    """
local stored = tonumber(redis.call('GET', KEYS[1])) or 0
local now = tonumber(ARGV[2])
local start, next_slot = now, 0
if ARGV[1] == 'reserve' then
  start = math.max(now, stored)
  next_slot = start + tonumber(ARGV[3])
else
  next_slot = math.max(tonumber(ARGV[3]), stored)
end
local ttl = math.max(1000, math.ceil((next_slot - now + 60) * 1000))
redis.call('SET', KEYS[1], string.format('%.17g', next_slot), 'PX', ttl)
return string.format('%.17g', start)
""",
)


class RedisPacer:
    """The pacer shared by every relay on one Redis; one script call per `reserve`/`hold`.

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

    async def hold(self, space: str, until: float, now: float) -> None:
        """See `Pacer.hold`."""
        await self.link.call(PACE, [self._key(space)], ["hold", number(now), number(until)])

    async def next_slot(self, space: str) -> float:
        """See `Pacer.next_slot`."""
        stored = await self.link.do(lambda r: r.get(self._key(space)))
        return 0.0 if stored is None else float(stored)
