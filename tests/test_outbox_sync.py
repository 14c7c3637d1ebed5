"""Which commits of the outbox file are fsynced: every group with an enqueue (accept means
durable), not the forwarder's claims and marks alone (a power cut may only undo those, which
sends an event again). Read from SQLite's own setting inside each job, on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from relay.store.sqlite import SQLiteOutbox
from relay.store.sqlite.writer import GroupCommitter

FULL, NORMAL = 2, 1  # PRAGMA synchronous


def synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_a_group_is_fsynced_when_any_of_its_jobs_must_be_durable(tmp_path: Path) -> None:
    async def main() -> list[int]:
        outbox = SQLiteOutbox(str(tmp_path / "outbox.db"))
        await outbox.start()
        writer = outbox._writer
        assert isinstance(writer, GroupCommitter)
        try:
            lax = await writer.submit(synchronous, durable=False)
            durable = await writer.submit(synchronous)
            # Hold the writer in one job so that the next two wait and make one group.
            entered, go = threading.Event(), threading.Event()

            def block(conn: sqlite3.Connection) -> None:
                entered.set()
                go.wait(10)

            blocker = writer.submit(block, durable=False)
            await asyncio.to_thread(entered.wait, 10)
            both = [writer.submit(synchronous, durable=False), writer.submit(synchronous)]
            go.set()
            await blocker
            mixed = await asyncio.gather(*both)
            again = await writer.submit(synchronous, durable=False)
            return [lax, durable, *mixed, again]
        finally:
            await outbox.close()

    assert asyncio.run(main()) == [NORMAL, FULL, FULL, FULL, NORMAL]


def test_the_forwarders_claims_and_marks_are_not_fsynced(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        outbox = SQLiteOutbox(str(tmp_path / "outbox.db"))
        await outbox.start()
        writer = outbox._writer
        assert isinstance(writer, GroupCommitter)
        try:
            before = writer.synced_commits
            claimed = await outbox.claim("acme", 10, 30.0, 1000.0)
            await outbox.delivered([1, 2], 1000.0)
            await outbox.retry(3, 1100.0, 503, "busy", 1000.0)
            await outbox.dead(4, 422, "bad", 1000.0)
            await outbox.release([5])
            assert claimed == []
            return writer.synced_commits - before, writer.commits
        finally:
            await outbox.close()

    synced, commits = asyncio.run(main())
    assert synced == 0 and commits >= 5
