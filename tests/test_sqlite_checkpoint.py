"""The SQLite outbox checkpoints its WAL from a thread of its own, never inside a commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from relay.settings import Settings
from relay.store.base import NewEvent
from relay.store.sqlite import WRITER_CHECKPOINT_PAGES, SQLiteOutbox
from relay.store.sqlite.writer import CHECKPOINT_SECONDS, FORWARD_CHECKPOINT_SECONDS
from relay.wiring import build
from tests.support import wait_for


def event(n: int) -> NewEvent:
    key = f"ckpt-{n}"
    return NewEvent(
        space="acme", event_name="purchase", idempotency_key=key, payload=b'{"x": 1}' * 40,
        dedup_keys=(f"idem:{key}",), dedup_until=2e9, received_at=1e9, priority=0,
    )


def test_the_checkpoint_thread_moves_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"

    async def scenario() -> None:
        outbox = SQLiteOutbox(str(path), checkpoint_seconds=0.05)
        await outbox.start()
        try:
            before = path.stat().st_size
            for start in range(0, 2000, 100):  # about 200 pages, far below the writer's own bound
                await outbox.enqueue([event(n) for n in range(start, start + 100)], 1e9)
            # Only a checkpoint writes pages into the database file itself.
            await asyncio.to_thread(
                wait_for, lambda: path.stat().st_size > before + 100 * 4096, 15, "a checkpoint"
            )
            writer_bound = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
            assert writer_bound < WRITER_CHECKPOINT_PAGES  # so the writer did not do it
        finally:
            await outbox.close()

    asyncio.run(scenario())
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (2000,)


def test_a_process_that_only_forwards_checkpoints_less_often(tmp_path: Path) -> None:
    """`comet-relay forward` writes a few claims and marks a second: every 2 s is enough, and
    each checkpoint costs the same copies of the hot pages and an fsync (bench/README.md)."""
    settings = Settings(database=str(tmp_path / "relay.db"))
    forwards = build(settings, receive=False).outbox
    serves = build(settings).outbox
    assert isinstance(forwards, SQLiteOutbox) and isinstance(serves, SQLiteOutbox)
    assert (forwards.checkpoint_seconds, serves.checkpoint_seconds) == (
        FORWARD_CHECKPOINT_SECONDS, CHECKPOINT_SECONDS)
    assert FORWARD_CHECKPOINT_SECONDS > CHECKPOINT_SECONDS
