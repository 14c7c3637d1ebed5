"""Rate limits on what comes in: `base.RateLimiter`, kept in memory, in the SQLite file or
in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

from relay.limits.base import RateLimiter
from relay.settings.model import is_redis_url


def open_limiter(
    database: str, clock: Callable[[], float] = time.time, *, shared: bool = False
) -> RateLimiter:
    """The limiter that `database` implies: shared through Redis (on Redis's own clock, unless
    a test injects one) beside a Redis; beside a SQLite file, per process, or in the file when
    it is `shared` by several processes (`serve --workers N`)."""
    if is_redis_url(database):
        from relay.limits.redis import RedisRateLimiter  # imported late: it imports redis

        return RedisRateLimiter(database, clock=None if clock is time.time else clock)
    if shared:
        from relay.limits.sqlite import SQLiteRateLimiter

        return SQLiteRateLimiter(database, clock)
    from relay.limits.memory import MemoryRateLimiter

    return MemoryRateLimiter(clock)
