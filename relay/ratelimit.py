"""Per-key rate limiting behind a small interface.

A token bucket per key: it holds at most `limit` tokens and refills at `limit` per minute, so
a Space with 1000/min may burst to 1000 and then sustain 1000/min. The Redis backend (shared by
many relays) implements the same `take`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until one request would be allowed; 0 when allowed

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers every answer carries (Retry-After when refused)."""
        h = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h


class RateLimiter(Protocol):
    """A limiter shared by whatever serves the same keys (one process, or every relay)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def take(self, key: str, limit_per_minute: int) -> Decision:
        """Spend one request of `key`'s allowance, if there is one."""
        ...

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        """What `take` would report, without spending anything."""
        ...


def decision(allowed: bool, limit: int, tokens: float) -> Decision:
    """The Decision for a bucket of `limit` a minute holding `tokens` after this request."""
    retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) * 60.0 / limit))
    return Decision(allowed, limit, int(tokens), retry_after)


class MemoryRateLimiter:
    """In-process token buckets; the clock is injected so tests control time."""

    def __init__(self, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    def _level(self, key: str, limit: int, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(limit), now))
        return min(float(limit), tokens + max(0.0, now - at) * limit / 60.0)

    async def start(self) -> None:
        """Nothing to start: the buckets live in this process."""

    async def close(self) -> None:
        """Nothing to close."""

    async def take(self, key: str, limit_per_minute: int) -> Decision:
        """See `RateLimiter.take`."""
        now = self._clock()
        tokens = self._level(key, limit_per_minute, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[key] = (tokens, now)
        return decision(allowed, limit_per_minute, tokens)

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        """See `RateLimiter.peek`."""
        tokens = self._level(key, limit_per_minute, self._clock())
        return decision(True, limit_per_minute, tokens)

    def _evict(self, now: float) -> None:
        # Buckets that have refilled are indistinguishable from new ones: dropping them is free.
        # If none has, drop the oldest half so memory stays bounded under a flood of keys.
        full = [k for k, (t, at) in self._buckets.items() if now - at >= 60.0]
        if not full:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            full = by_age[: len(by_age) // 2]
        for k in full:
            del self._buckets[k]
