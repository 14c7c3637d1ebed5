"""Contract tests of the upstream pacer, in-process and on Redis; shared pacing at the end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from relay.delivery.pacing import open_pacer
from relay.delivery.pacing.base import Pacer
from relay.delivery.pacing.memory import MemoryPacer
from relay.delivery.pacing.redis import RedisPacer
from relay.delivery.pacing.sqlite import MAX_AHEAD_SECONDS, SQLitePacer
from relay.errors import Unavailable
from relay.store.sqlite import SQLiteOutbox
from tests.support import free_port

T0 = 1_800_000_000.0


WITH_OUTBOX = "with-outbox:"  # a SQLite pacer writing through the file's outbox, as wired


@pytest.fixture(params=["memory", "sqlite", "sqlite-outbox", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """ "memory", a SQLite file's path (alone, or after WITH_OUTBOX), or the URL of the
    session's redis-server, emptied."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    if request.param == "sqlite-outbox":
        return WITH_OUTBOX + str(tmp_path / "relay.db")
    return str(request.param)


def run(backend: str, scenario: Callable[[Pacer], Awaitable[None]]) -> None:
    async def main() -> None:
        if backend == "memory":
            await scenario(MemoryPacer())
            return
        async with contextlib.AsyncExitStack() as stack:
            outbox = None
            if backend.startswith(WITH_OUTBOX):
                backend_path = backend.removeprefix(WITH_OUTBOX)
                outbox = await stack.enter_async_context(SQLiteOutbox(backend_path))
                pacer = open_pacer(backend_path, outbox)
                assert isinstance(pacer, SQLitePacer) and pacer.writer is outbox
            else:
                pacer = open_pacer(backend)
            await stack.enter_async_context(pacer)
            await scenario(pacer)

    asyncio.run(main())


def test_reserve_spaces_starts_one_interval_apart(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        assert await pacer.next_slot("acme") == 0.0
        starts = [await pacer.reserve("acme", 0.5, T0) for _ in range(4)]
        assert starts == [T0, T0 + 0.5, T0 + 1.0, T0 + 1.5]
        assert await pacer.next_slot("acme") == T0 + 2.0

    run(backend, scenario)


def test_an_idle_space_starts_at_once(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        assert await pacer.reserve("acme", 0.5, T0) == T0
        assert await pacer.reserve("acme", 0.5, T0 + 10) == T0 + 10  # no credit for idling
        assert await pacer.reserve("acme", 0.5, T0 + 10) == T0 + 10.5

    run(backend, scenario)


def test_spaces_are_paced_apart(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        assert await pacer.reserve("acme", 1.0, T0) == T0
        assert await pacer.reserve("beta", 1.0, T0) == T0
        assert await pacer.reserve("acme", 1.0, T0) == T0 + 1.0

    run(backend, scenario)


def test_hold_pushes_the_next_slot_but_never_pulls_it_back(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        await pacer.reserve("acme", 1.0, T0)
        await pacer.hold("acme", T0 + 30, T0)  # Retry-After: 30
        assert await pacer.reserve("acme", 1.0, T0 + 1) == T0 + 30
        await pacer.hold("acme", T0 + 5, T0 + 2)  # an earlier hold changes nothing
        assert await pacer.reserve("acme", 1.0, T0 + 2) == T0 + 31

    run(backend, scenario)


def test_concurrent_reservations_get_distinct_slots(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        starts = await asyncio.gather(*(pacer.reserve("acme", 0.25, T0) for _ in range(40)))
        assert sorted(starts) == [T0 + 0.25 * i for i in range(40)]

    run(backend, scenario)


# SQLite only


def test_sqlite_forwarders_on_one_file_share_the_pace_and_a_hold_outlives_them(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "relay.db")

    async def scenario() -> tuple[list[float], float, float]:
        pacers = [SQLitePacer(path) for _ in range(3)]
        for pacer in pacers:
            await pacer.start()
        starts = await asyncio.gather(*(p.reserve("acme", 0.1, T0) for _ in range(10) for p in pacers))
        await pacers[0].hold("acme", T0 + 60, T0)  # a 429's Retry-After: 60
        for pacer in pacers:
            await pacer.close()  # every forwarder is gone (killed, restarted)
        again = SQLitePacer(path)
        await again.start()
        try:
            after_restart = await again.reserve("acme", 0.1, T0 + 5)
            far = await again.reserve("beta", 0.1, T0)
            await again.hold("beta", T0 + 10 * MAX_AHEAD_SECONDS, T0)  # a clock set far ahead
            clamped = await again.reserve("beta", 0.1, T0 + 1)
        finally:
            await again.close()
        assert far == T0
        return sorted(starts), after_restart, clamped

    starts, after_restart, clamped = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert starts[0] == T0 and gaps == pytest.approx([0.1] * 29, abs=1e-6)
    assert after_restart == T0 + 60
    assert clamped == T0 + 1 + MAX_AHEAD_SECONDS


# Redis only


def test_redis_forwarders_of_several_relays_share_the_pace(redis_url: str) -> None:
    async def scenario() -> list[float]:
        pacers = [RedisPacer(redis_url) for _ in range(3)]
        for pacer in pacers:
            await pacer.start()
        try:
            return list(
                await asyncio.gather(
                    *(p.reserve("acme", 0.1, T0) for _ in range(20) for p in pacers)
                )
            )
        finally:
            for pacer in pacers:
                await pacer.close()

    starts = sorted(asyncio.run(scenario()))
    assert starts[0] == T0
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1] * 59, abs=1e-5)  # 3 relays, one pace: 10 starts a second


def test_redis_pacer_down_is_unavailable() -> None:
    async def scenario() -> None:
        pacer = RedisPacer(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(Unavailable):
            await pacer.start()
        with pytest.raises(Unavailable):
            await pacer.reserve("acme", 1.0, T0)

    asyncio.run(asyncio.wait_for(scenario(), 10))
