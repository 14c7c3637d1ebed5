"""Contract tests of the rate limiter, run against the in-process, SQLite and Redis backends.

Both are driven through the async interface (`take` and `peek` are coroutines): the Redis one
must be, and the in-process one is wrapped. Backend-specific checks come at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from relay.errors import Unavailable
from relay.limits.base import Decision, RateLimiter
from relay.limits.memory import MemoryRateLimiter
from relay.limits.redis import RedisRateLimiter
from relay.limits.sqlite import SQLiteRateLimiter
from tests.support import free_port


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """ "memory", a SQLite file's path, or the URL of the session's redis-server, emptied."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "sqlite":
        return str(tmp_path / "limits.db")
    return str(request.param)


def make_limiter(backend: str, clock: Clock) -> RateLimiter:
    if backend == "memory":
        return MemoryRateLimiter(clock)
    if backend.endswith(".db"):
        return SQLiteRateLimiter(backend, clock)
    return RedisRateLimiter(backend, clock=clock)


def run(backend: str, scenario: Callable[[RateLimiter, Clock], Awaitable[None]]) -> None:
    """Run `scenario` with a fresh limiter of `backend` on a clock the test moves."""
    clock = Clock()

    async def main() -> None:
        limiter = make_limiter(backend, clock)
        await limiter.start()
        try:
            await scenario(limiter, clock)
        finally:
            await limiter.close()

    asyncio.run(main())


def test_allows_the_limit_then_refuses_with_retry_after(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        decisions = [await limiter.take("s", 60) for _ in range(61)]
        assert all(d.allowed for d in decisions[:60])
        assert [d.remaining for d in decisions[:3]] == [59, 58, 57]
        assert all(d.limit == 60 and d.retry_after == 0 for d in decisions[:60])
        last = decisions[60]
        assert not last.allowed and last.remaining == 0
        assert last.retry_after == 1  # 60/min refills one token a second
        assert last.headers()["Retry-After"] == "1"

    run(backend, scenario)


def test_refills_at_the_configured_rate(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        for _ in range(10):
            await limiter.take("s", 10)
        assert not (await limiter.take("s", 10)).allowed
        clock.t += 6.0  # 10/min: one token every 6 s
        assert (await limiter.take("s", 10)).allowed
        assert not (await limiter.take("s", 10)).allowed
        clock.t += 60.0
        assert (await limiter.peek("s", 10)).remaining == 10  # never more than the limit

    run(backend, scenario)


def test_retry_after_counts_whole_seconds_up(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        await limiter.take("s", 1)
        refused = await limiter.take("s", 1)
        assert not refused.allowed and refused.retry_after == 60
        clock.t += 59.5
        assert (await limiter.take("s", 1)).retry_after == 1

    run(backend, scenario)


def test_keys_are_independent(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        assert (await limiter.take("a", 1)).allowed
        assert (await limiter.take("b", 1)).allowed
        assert not (await limiter.take("a", 1)).allowed

    run(backend, scenario)


def test_peek_spends_nothing(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        for _ in range(5):
            peeked = await limiter.peek("s", 3)
            assert (peeked.allowed, peeked.remaining, peeked.retry_after) == (True, 3, 0)
        assert (await limiter.take("s", 3)).remaining == 2

    run(backend, scenario)


def test_a_clock_that_steps_back_adds_no_tokens(backend: str) -> None:
    async def scenario(limiter: RateLimiter, clock: Clock) -> None:
        await limiter.take("s", 2)
        await limiter.take("s", 2)
        clock.t -= 30.0
        assert not (await limiter.take("s", 2)).allowed

    run(backend, scenario)


# in-process only


def test_memory_stays_bounded() -> None:
    limiter = MemoryRateLimiter(Clock(), max_keys=100)

    async def scenario() -> list[Decision]:
        return [await limiter.take(f"ip-{i}", 5) for i in range(1000)]

    decisions = asyncio.run(scenario())
    assert all(d.allowed for d in decisions)
    assert 0 < len(limiter._buckets) <= 100
    assert "ip-999" in limiter._buckets  # the newest keys are kept, the oldest evicted


# Redis only


def test_redis_relays_share_one_bucket(redis_url: str) -> None:
    clock = Clock()

    async def scenario() -> list[Decision]:
        limiters = [RedisRateLimiter(redis_url, clock=clock) for _ in range(3)]
        for limiter in limiters:
            await limiter.start()
        try:
            # 3 relays, 40 concurrent requests each, one Space with 100/min.
            return await asyncio.gather(
                *(limiter.take("space:acme", 100) for limiter in limiters for _ in range(40))
            )
        finally:
            for limiter in limiters:
                await limiter.close()

    decisions = asyncio.run(scenario())
    assert sum(d.allowed for d in decisions) == 100
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(100))


def test_redis_server_clock_and_idle_buckets_expire(redis_url: str) -> None:
    async def scenario() -> tuple[list[Decision], int]:
        limiter = RedisRateLimiter(redis_url)  # Redis's clock
        await limiter.start()
        try:
            decisions = [await limiter.take("ip:192.0.2.1", 2) for _ in range(3)]
            ttl = await limiter.link.do(lambda r: r.pttl("comet:rl:ip:192.0.2.1"))
            return decisions, int(ttl)
        finally:
            await limiter.close()

    decisions, ttl = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 29 <= decisions[2].retry_after <= 30  # 2/min: a token every 30 s
    assert 0 < ttl <= 61_000  # gone once it has refilled


def test_redis_down_is_unavailable_not_a_hang() -> None:
    async def scenario() -> None:
        limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", clock=Clock())
        with pytest.raises(Unavailable):
            await limiter.start()
        with pytest.raises(Unavailable) as refused:
            await limiter.take("s", 1)
        assert "refused a script" not in str(refused.value)  # it says Redis is not there

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_redis_takes_of_one_tick_share_one_round_trip(redis_url: str) -> None:
    async def scenario() -> tuple[list[Decision], list[int]]:
        limiter = RedisRateLimiter(redis_url, clock=Clock())
        await limiter.start()
        sizes: list[int] = []
        run = limiter.link.run

        async def counted(calls: Any) -> list[Any]:
            sizes.append(len(calls))
            return await run(calls)

        limiter.link.run = counted  # type: ignore[method-assign]
        try:
            decisions = await asyncio.gather(*(limiter.take("space:acme", 30) for _ in range(40)))
        finally:
            await limiter.close()
        return list(decisions), sizes

    decisions, sizes = asyncio.run(scenario())
    assert sizes == [40]  # one pipeline for the tick's 40 takes
    assert [d.allowed for d in decisions].count(True) == 30  # and each still spends its token


def test_two_sqlite_limiters_on_one_file_spend_one_allowance(tmp_path: Any) -> None:
    """What `serve --workers N` relies on: every worker's limiter takes from the same bucket."""
    clock = Clock()
    path = str(tmp_path / "shared.db")

    async def main() -> None:
        first, second = SQLiteRateLimiter(path, clock), SQLiteRateLimiter(path, clock)
        await first.start()
        await second.start()
        try:
            decisions = await asyncio.gather(
                *(limiter.take("space:acme", 10) for limiter in (first, second) for _ in range(8))
            )
            assert sum(d.allowed for d in decisions) == 10
            assert (await first.peek("space:acme", 10)).remaining == 0
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
