"""Which implementation of each shared piece a `database` setting selects.

A SQLite path keeps the outbox and the upstream pacing in the file (shared by the processes
on that file) and the inbound rate limits in the process's memory; a redis:// or rediss://
URL puts all three in that Redis, so every relay and forwarder using it shares them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.pacing import Pacer
from relay.ratelimit import MemoryRateLimiter, RateLimiter


def is_redis(database: str) -> bool:
    return database.startswith(("redis://", "rediss://"))


def open_limiter(database: str, clock: Callable[[], float] = time.time) -> RateLimiter:
    """The inbound rate limiter: per process, or shared through Redis (on Redis's clock)."""
    if is_redis(database):
        from relay.ratelimit_redis import RedisRateLimiter

        return RedisRateLimiter(database, clock=None if clock is time.time else clock)
    return MemoryRateLimiter(clock)


def open_pacer(database: str) -> Pacer:
    """The upstream pacer, shared by every forwarder on the SQLite file or on the Redis."""
    if is_redis(database):
        from relay.pacing import RedisPacer

        return RedisPacer(database)
    from relay.pacing_sqlite import SQLitePacer

    return SQLitePacer(database)
