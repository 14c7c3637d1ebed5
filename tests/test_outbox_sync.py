"""Which commits of the outbox file are fsynced, and when their callers hear of it.

The writer commits with `synchronous = NORMAL` and hands every group with an enqueue (accept
means durable) to the syncer, which fsyncs the WAL before answering it; the forwarder's claims
and marks alone are answered at their commit (a power cut may only undo those, which sends an
event again). On a real file; the sync is the real `WalSync` or a stand-in the test holds."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import relay.sqlite_file
from relay.app import create_app
from relay.errors import Unavailable
from relay.settings import load
from relay.sqlite_file import WalSync
from relay.store.sqlite import SQLiteOutbox
from relay.store.sqlite.schema import open_file
from relay.store.sqlite.writer import GroupCommitter
from tests.support import wait_for, write_config
from tests.test_outbox import T0, event

NORMAL = 1  # PRAGMA synchronous


class HeldSync:
    """A stand-in for the WAL's fsync that counts its calls and, while held, waits."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.error: OSError | None = None

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.go.wait(30), "the test never let the sync go"
        if self.error is not None:
            raise self.error


@contextmanager
def committer(tmp_path: Path, sync: Callable[[], None]) -> Iterator[GroupCommitter]:
    conn, reader = open_file(str(tmp_path / "relay.db"), 10.0)
    reader.close()
    conn.execute("CREATE TABLE IF NOT EXISTS t (x TEXT)")
    writer = GroupCommitter(conn, sync)
    try:
        yield writer
    finally:
        assert writer.stop(30)


def insert(value: str) -> Callable[[sqlite3.Connection], str]:
    def work(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return work


def committed(tmp_path: Path) -> set[str]:
    """What another connection reads: what the writer has committed, synced or not."""
    conn = sqlite3.connect(tmp_path / "relay.db")
    try:
        return {row[0] for row in conn.execute("SELECT x FROM t")}
    finally:
        conn.close()


def until_committed(tmp_path: Path, value: str) -> None:
    wait_for(lambda: value in committed(tmp_path), 15, f"{value} committed")


def test_a_durable_job_is_answered_only_after_the_sync_that_follows_its_commit(
    tmp_path: Path,
) -> None:
    sync = HeldSync()

    async def main() -> None:
        with committer(tmp_path, sync) as writer:
            sync.go.clear()
            answer = writer.submit(insert("a"))
            await asyncio.to_thread(until_committed, tmp_path, "a")
            await asyncio.to_thread(sync.entered.wait, 15)
            done, _ = await asyncio.wait([answer], timeout=0.5)
            assert not done, "answered while its fsync had not returned"
            sync.go.set()
            assert await asyncio.wait_for(answer, 15) == "a"

    asyncio.run(main())
    assert sync.calls == 1


def test_the_writer_commits_the_next_group_while_a_sync_is_under_way(tmp_path: Path) -> None:
    sync = HeldSync()

    async def main() -> None:
        with committer(tmp_path, sync) as writer:
            sync.go.clear()
            first = writer.submit(insert("first"))
            await asyncio.to_thread(sync.entered.wait, 15)
            second = writer.submit(insert("second"))
            # The fsync of the first group holds no lock: the second group commits meanwhile.
            await asyncio.to_thread(until_committed, tmp_path, "second")
            assert not first.done() and not second.done()
            sync.go.set()
            assert await asyncio.wait_for(asyncio.gather(first, second), 15) == [
                "first", "second"
            ]
            # The second group waited for a sync of its own: the first began before it.
            assert writer.syncs == 2 and writer.synced_commits == 2

    asyncio.run(main())


def test_a_group_is_synced_when_any_of_its_jobs_must_be_durable(tmp_path: Path) -> None:
    sync = HeldSync()

    async def main() -> list[int]:
        with committer(tmp_path, sync) as writer:
            calls = []
            await writer.submit(insert("lax"), durable=False)
            calls.append(sync.calls)
            await writer.submit(insert("durable"))
            calls.append(sync.calls)
            # Hold the writer in one job so that the next two wait and make one group.
            entered, go = threading.Event(), threading.Event()

            def block(conn: sqlite3.Connection) -> None:
                entered.set()
                go.wait(10)

            blocker = writer.submit(block, durable=False)
            await asyncio.to_thread(entered.wait, 10)
            both = [writer.submit(insert("mixed-lax"), durable=False), writer.submit(insert("m"))]
            sync.go.clear()
            sync.entered.clear()
            go.set()
            await blocker
            await asyncio.to_thread(until_committed, tmp_path, "m")
            await asyncio.to_thread(sync.entered.wait, 15)
            # The lax job of a durable group is answered with its group, after the sync.
            assert not any(job.done() for job in both)
            sync.go.set()
            await asyncio.gather(*both)
            calls.append(sync.calls)
            await writer.submit(insert("lax-again"), durable=False)
            calls.append(sync.calls)
            return calls

    assert asyncio.run(main()) == [0, 1, 2, 2]


def test_a_failed_sync_fails_its_jobs_and_every_durable_one_after_it_until_a_restart(
    tmp_path: Path,
) -> None:
    """After a failed fsync a later one may succeed without the lost pages (Linux reports the
    error once), so no later durable job may be answered as durable."""
    sync = HeldSync()
    sync.error = OSError(5, "Input/output error")

    async def main() -> tuple[str, int]:
        with committer(tmp_path, sync) as writer:
            with pytest.raises(sqlite3.OperationalError, match="could not be synced"):
                await writer.submit(insert("unsure"))
            sync.error = None  # the disk answers again
            with pytest.raises(sqlite3.OperationalError, match="restart the relay"):
                await writer.submit(insert("after"))
            lax = await writer.submit(insert("a claim"), durable=False)
        # A restart: a new writer on the file syncs again.
        with committer(tmp_path, sync) as writer:
            return lax, await writer.submit(insert("sure"))

    assert asyncio.run(main()) == ("a claim", "sure")
    assert sync.calls == 2  # the failed one, and the new writer's


def test_stop_answers_the_groups_still_waiting_for_their_sync(tmp_path: Path) -> None:
    sync = HeldSync()

    async def main() -> list[str]:
        with committer(tmp_path, sync) as writer:
            sync.go.clear()
            answers = [writer.submit(insert(f"late-{n}")) for n in range(3)]
            await asyncio.to_thread(sync.entered.wait, 15)
            stopping = asyncio.ensure_future(asyncio.to_thread(writer.stop, 30))
            done, _ = await asyncio.wait([stopping], timeout=0.5)
            assert not done, "stopped with a sync under way"
            sync.go.set()
            assert await stopping
            return list(await asyncio.gather(*answers))

    assert asyncio.run(main()) == ["late-0", "late-1", "late-2"]


def test_an_enqueue_is_answered_after_an_fdatasync_of_the_files_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real sync, end to end: what `SQLiteOutbox.enqueue` waits for is an fdatasync of a
    descriptor of `relay.db-wal`, on a connection that commits with `synchronous = NORMAL`."""
    path = tmp_path / "relay.db"
    synced: list[int] = []  # the inode of each synced descriptor
    datasync = relay.sqlite_file._datasync

    def recording(fd: int) -> None:
        datasync(fd)
        synced.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(relay.sqlite_file, "_datasync", recording)

    async def main() -> tuple[int, list[int], int]:
        outbox = SQLiteOutbox(str(path))
        await outbox.start()
        try:
            writer = outbox._writer
            assert isinstance(writer, GroupCommitter)
            mode = await writer.submit(
                lambda conn: int(conn.execute("PRAGMA synchronous").fetchone()[0]), durable=False
            )
            assert synced == []
            await outbox.enqueue([event("k1")], T0)
            return mode, list(synced), os.stat(f"{path}-wal").st_ino
        finally:
            await outbox.close()

    mode, after_enqueue, wal = asyncio.run(main())
    assert mode == NORMAL
    assert after_enqueue == [wal]


def test_an_outbox_file_reached_by_a_symbolic_link_is_synced_where_sqlite_keeps_its_wal(
    tmp_path: Path,
) -> None:
    """SQLite puts the WAL beside the file the link leads to, not beside the link."""
    (tmp_path / "data").mkdir()
    link = tmp_path / "relay.db"
    link.symlink_to(tmp_path / "data" / "outbox.db")

    async def main() -> int:
        outbox = SQLiteOutbox(str(link))
        await outbox.start()
        try:
            writer = outbox._writer
            assert writer is not None
            await outbox.enqueue([event("linked")], T0)
            return writer.syncs
        finally:
            await outbox.close()

    assert asyncio.run(main()) == 1
    assert not (tmp_path / "relay.db-wal").exists()


def test_wal_sync_follows_a_wal_that_was_replaced(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    wal = WalSync(str(path))
    try:
        wal()
        first = os.stat(f"{path}-wal").st_ino
        conn.close()  # the last connection: SQLite checkpoints and removes the WAL
        assert not os.path.exists(f"{path}-wal")
        with pytest.raises(FileNotFoundError):
            wal()
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO t VALUES (1)")
        # Keep the old inode alive, so the new WAL cannot reuse its number.
        assert os.fstat(wal._fd).st_ino == first  # type: ignore[arg-type]
        wal()
        assert os.fstat(wal._fd).st_ino == os.stat(f"{path}-wal").st_ino != first  # type: ignore[arg-type]
    finally:
        wal.close()
        conn.close()


def test_the_forwarders_claims_and_marks_are_not_fsynced(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, int]:
        outbox = SQLiteOutbox(str(tmp_path / "outbox.db"))
        await outbox.start()
        writer = outbox._writer
        assert isinstance(writer, GroupCommitter)
        try:
            before = writer.syncs
            claimed = await outbox.claim("acme", 10, 30.0, 1000.0)
            await outbox.delivered([1, 2], 1000.0)
            await outbox.retry(3, 1100.0, 503, "busy", 1000.0)
            await outbox.dead(4, 422, "bad", 1000.0)
            await outbox.release([5])
            assert claimed == []
            lax = writer.syncs - before
            await outbox.enqueue([event("k")], T0)
            return lax, writer.syncs - before, writer.commits
        finally:
            await outbox.close()

    lax, with_enqueue, commits = asyncio.run(main())
    assert lax == 0 and commits >= 6
    assert with_enqueue == 1


def test_a_failed_sync_is_a_503_kind_of_failure_for_the_sender(tmp_path: Path) -> None:
    """The outbox turns the failed sync into Unavailable (a 503: the sender sends again, and
    the dedup answers the resend with the event that did reach the file)."""
    sync = HeldSync()
    sync.error = OSError(28, "No space left on device")

    async def main() -> None:
        outbox = SQLiteOutbox(str(tmp_path / "relay.db"))
        await outbox.start()
        try:
            writer = outbox._writer
            assert writer is not None
            writer._sync = sync
            with pytest.raises(Unavailable, match="synced"):
                await outbox.enqueue([event("k")], T0)
        finally:
            await outbox.close()

    asyncio.run(main())


def test_after_a_failed_sync_the_relay_is_not_ready(tmp_path: Path) -> None:
    """/readyz answers 503 once the outbox accepts nothing until a restart, so a balancer
    sends the events to a relay that can keep them."""
    settings = load(str(write_config(tmp_path)), os.environ)
    app = create_app(settings, forward=False)
    sync = HeldSync()

    async def main() -> tuple[int, int, int]:
        outbox = app.state.outbox
        await outbox.start()
        try:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
                before = (await c.get("/readyz")).status_code
                outbox._writer._sync = sync
                sync.error = OSError(5, "Input/output error")
                body = json.dumps({"event_name": "purchase", "email": "a@b.co"})
                track = await c.post("/public-api/v1/events/track", content=body,
                                     headers={"Authorization": "Bearer key-acme-write"})
                after = (await c.get("/readyz")).status_code
                return before, track.status_code, after
        finally:
            await outbox.close()

    assert asyncio.run(main()) == (200, 503, 503)
