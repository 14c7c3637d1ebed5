"""The debugger's memory: recent sightings of events and per-minute counts, in this process.

A `Sighting` is one step of one event as this process saw it: received from the browser or
the API and then refused, deduplicated, dropped as a bot or queued; or an upstream attempt
that delivered it, will retry it, paused its Space or moved it to the dead letters. The
`Journal` keeps the last `size` of them (a ring buffer), lets followers wait for new ones, and
counts received and delivered events and the queue depth per minute for the last hour.

Pure bookkeeping: no web or storage imports; times are passed in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import asdict, dataclass

RING_SIZE = 2000
MINUTES = 60


@dataclass(frozen=True)
class Sighting:
    """One step of one event. `key` is its idempotency key (the pixel's event id), if any."""

    seq: int
    at: float
    space: str
    source: str  # "browser", "api", "forwarder" or "debugger" (a replay)
    # received: refused, duplicate, bot, queued, held, merged, superseded;
    # sent: delivered, retrying, paused, dead; replayed
    stage: str
    key: str | None = None
    reason: str = ""  # why it was refused, or the upstream's message
    status: int | None = None  # the upstream's HTTP status
    outbox_id: int | None = None
    event_name: str = ""
    next_at: float | None = None  # "retrying": when it is tried again; "held": until when

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Journal:
    """A bounded ring of `Sighting`s plus per-minute counts; followers await `wait(seq)`."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.ring: deque[Sighting] = deque(maxlen=size)
        self.seq = 0
        self.closed = False
        self._changed = asyncio.Event()
        # minute (Unix time // 60) -> [received, delivered, queue depth or -1 if not sampled]
        self.minutes: dict[int, list[int]] = {}

    def add(
        self, at: float, space: str, source: str, stage: str, key: str | None, **detail: object
    ) -> Sighting:
        """Record one step; wakes every follower."""
        self.seq += 1
        sighting = Sighting(self.seq, at, space, source, stage, key, **detail)  # type: ignore[arg-type]
        self.ring.append(sighting)
        if source in ("browser", "api") and stage != "superseded":  # each received once
            self._minute(at)[0] += 1
        elif stage == "delivered":
            self._minute(at)[1] += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return sighting

    def depth(self, at: float, queued: int) -> None:
        """Record the queue depth seen at `at` (the last sample of a minute wins)."""
        self._minute(at)[2] = queued

    def _minute(self, at: float) -> list[int]:
        minute = int(at // 60)
        counts = self.minutes.get(minute)
        if counts is None:
            counts = self.minutes[minute] = [0, 0, -1]
            for old in [m for m in self.minutes if m <= minute - MINUTES]:
                del self.minutes[old]
        return counts

    def since(self, seq: int, limit: int = RING_SIZE) -> list[Sighting]:
        """The sightings after `seq`, oldest first; at most the last `limit` of them."""
        newer = [s for s in reversed(self.ring) if s.seq > seq][:limit]
        newer.reverse()
        return newer

    def find(self, text: str) -> list[Sighting]:
        """Every sighting whose key (or outbox id) is `text`, oldest first."""
        return [s for s in self.ring if s.key == text or str(s.outbox_id) == text]

    def chart(self, now: float) -> list[dict[str, int]]:
        """The last hour, one row per minute, oldest first: received, delivered, depth."""
        last = int(now // 60)
        rows = []
        for minute in range(last - MINUTES + 1, last + 1):
            received, delivered, depth = self.minutes.get(minute, (0, 0, -1))
            rows.append({"minute": minute * 60, "received": received, "delivered": delivered,
                         "depth": depth})
        return rows

    async def wait(self, seq: int, timeout: float) -> None:
        """Return when there is a sighting after `seq`, the journal closes, or after `timeout`."""
        if self.seq > seq or self.closed:
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        """Tell followers to stop (shutdown)."""
        self.closed = True
        self._changed.set()
