"""`Pacer.reserve_batch` on every backend: n starts in one step, as n `reserve` calls would be."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from relay.delivery.pacing import open_pacer
from relay.delivery.pacing.base import Pacer
from relay.delivery.pacing.redis import RedisPacer
from relay.delivery.pacing.sqlite import SQLitePacer
from relay.settings import Settings, Space
from relay.store.sqlite import SQLiteOutbox
from relay.wiring import build
from tests import test_pacing
from tests.test_pacing import T0, run

backend = test_pacing.backend  # the same fixture: memory, a SQLite file, the test Redis



def test_a_batch_is_n_starts_one_interval_apart(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        assert await pacer.reserve_batch("acme", 0.5, 4, T0) == [T0, T0 + 0.5, T0 + 1.0, T0 + 1.5]
        assert await pacer.next_slot("acme") == T0 + 2.0
        assert await pacer.reserve("acme", 0.5, T0) == T0 + 2.0  # one at a time goes on after
        assert await pacer.reserve_batch("acme", 0.5, 2, T0) == [T0 + 2.5, T0 + 3.0]
        assert await pacer.reserve_batch("acme", 0.5, 1, T0 + 10) == [T0 + 10]  # idle: now

    run(backend, scenario)


def test_a_batch_waits_out_a_hold(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        await pacer.hold("acme", T0 + 30, T0)  # Retry-After: 30
        assert await pacer.reserve_batch("acme", 1.0, 3, T0) == [T0 + 30, T0 + 31, T0 + 32]
        assert await pacer.reserve_batch("beta", 1.0, 2, T0) == [T0, T0 + 1]  # its own pace

    run(backend, scenario)


def test_concurrent_batches_never_share_a_slot(backend: str) -> None:
    async def scenario(pacer: Pacer) -> None:
        batches = await asyncio.gather(*(pacer.reserve_batch("acme", 0.25, 5, T0) for _ in range(8)))
        starts = sorted(s for batch in batches for s in batch)
        assert starts == pytest.approx([T0 + 0.25 * i for i in range(40)], abs=1e-6)

    run(backend, scenario)


def spaced(starts: list[float], interval: float) -> bool:
    starts = sorted(starts)
    return all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("shared", ["sqlite", "redis"])
def test_two_pacers_on_one_store_share_the_pace_in_batches(
    shared: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    def pacer() -> SQLitePacer | RedisPacer:
        if shared == "sqlite":
            return SQLitePacer(str(tmp_path / "relay.db"))
        return RedisPacer(request.getfixturevalue("redis_url"))

    async def scenario() -> list[float]:
        pacers = [pacer(), pacer()]
        for p in pacers:
            await p.start()
        try:
            batches = await asyncio.gather(
                *(p.reserve_batch("acme", 0.1, 7, T0) for _ in range(5) for p in pacers)
            )
            single = await pacers[1].reserve("acme", 0.1, T0)
        finally:
            for p in pacers:
                await p.close()
        return [s for batch in batches for s in batch] + [single]

    starts = asyncio.run(scenario())
    assert len(starts) == 71 and min(starts) == T0
    assert spaced(starts, 0.1) and max(starts) == pytest.approx(T0 + 7.0, abs=1e-5)


def test_the_next_slot_is_read_without_a_thread_or_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forwarder asks once per batch: the read is made on the caller's thread, and while
    another process holds the file's write lock it reads the last committed slot at once."""
    path = tmp_path / "relay.db"

    async def scenario() -> None:
        async with SQLitePacer(str(path)) as pacer:
            await pacer.reserve_batch("acme", 0.5, 4, T0)
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # the write lock, held
            other.execute("UPDATE pace SET next_slot = ? WHERE space = 'acme'", (T0 + 99,))
            try:
                with monkeypatch.context() as no_threads:
                    no_threads.setattr(asyncio, "to_thread", None)  # a call would fail
                    assert await pacer.next_slot("acme") == T0 + 2.0
            finally:
                other.execute("ROLLBACK")
                other.close()

    asyncio.run(scenario())


def test_a_read_that_would_wait_goes_to_a_thread(tmp_path: Path) -> None:
    class Waiting:
        def execute(self, *args: object) -> None:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise busy

        def close(self) -> None:
            pass

    async def scenario() -> float:
        async with SQLitePacer(str(tmp_path / "relay.db")) as pacer:
            await pacer.reserve_batch("acme", 0.5, 2, T0)
            pacer._reader = Waiting()  # type: ignore[assignment]
            return await pacer.next_slot("acme")

    assert asyncio.run(scenario()) == T0 + 1.0


def test_a_pacer_given_the_outbox_writes_in_the_outbox_writers_commits(tmp_path: Path) -> None:
    """As wired (`build`), the SQLite pacer's reservations and holds are jobs of the outbox's
    writer thread: committed by it, and kept in the file for every other forwarder (and a
    restart) to see."""
    path = str(tmp_path / "relay.db")

    async def scenario() -> None:
        outbox = SQLiteOutbox(path)
        async with outbox, open_pacer(path, outbox) as pacer:
            before = outbox.commits
            assert await pacer.reserve_batch("acme", 0.5, 4, T0) == [T0 + 0.5 * i for i in range(4)]
            await pacer.hold("acme", T0 + 60, T0)
            assert outbox.commits == before + 2
            async with SQLitePacer(path) as other:  # another process's, on its own connection
                assert await other.next_slot("acme") == T0 + 60
        async with SQLitePacer(path) as restarted:
            assert await restarted.reserve_batch("acme", 0.5, 1, T0) == [T0 + 60]

    asyncio.run(scenario())


def test_build_gives_the_sqlite_pacer_the_outbox_of_its_file(tmp_path: Path) -> None:
    settings = Settings(database=str(tmp_path / "relay.db"), spaces={
        "acme": Space("acme", upstream_url="http://127.0.0.1:9/track")})
    parts = build(settings, receive=False)
    assert parts.forwarder is not None
    pacer = parts.forwarder.pacer
    assert isinstance(pacer, SQLitePacer) and pacer.writer is parts.outbox
