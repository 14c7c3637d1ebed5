"""The rate limiter of one process: token buckets in a dict, bounded in size."""

from __future__ import annotations

from collections.abc import Callable

from relay.lifecycle import Lifecycle
from relay.limits.base import Decision, decision, refilled


class MemoryRateLimiter(Lifecycle):
    """In-process token buckets; the clock is injected so tests control time."""

    def __init__(self, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)

    def _level(self, key: str, limit: int, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(limit), now))
        return refilled(tokens, at, now, limit)

    async def take(self, key: str, limit_per_minute: int, cost: int = 1) -> Decision:
        """See `RateLimiter.take`."""
        now = self._clock()
        tokens = self._level(key, limit_per_minute, now)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[key] = (tokens, now)
        return decision(allowed, limit_per_minute, tokens, cost)

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
