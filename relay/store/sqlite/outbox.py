"""`SQLiteOutbox`: the Outbox methods on one SQLite file (see the package docstring).

Writes are jobs for the writer thread (writer.py), committed in groups; reads run on a second,
read-only connection, in one snapshot each.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from relay.errors import Unavailable
from relay.rules.events import Source
from relay.sqlite_file import WalSync
from relay.store.base import (
    ChangePage,
    Claimed,
    DeadEvent,
    Enqueued,
    Enqueues,
    OutboxStats,
    QueueFigures,
    TickBatchedOutbox,
)
from relay.store.sqlite.changes import STEPS_KEPT_SECONDS, parse_cursor, present, read_page
from relay.store.sqlite.enqueue import enqueue
from relay.store.sqlite.figures import read_figures
from relay.store.sqlite.schema import open_file
from relay.store.sqlite.writer import CHECKPOINT_SECONDS, Checkpointer, GroupCommitter
from relay.tick import fail_all

T = TypeVar("T")
log = logging.getLogger(__name__)

PRUNE_CHUNK = 1000  # rows per transaction, so pruning never holds the write lock for long
BUCKETS = ("queued", "retrying", "delivered", "dead")

CLAIM = """
SELECT id, event_name, idempotency_key, payload, attempts, received_at, source, twin
FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND status = 'queued' AND next_attempt_at <= ?
  AND (lease_until IS NULL OR lease_until <= ?)
ORDER BY priority, id
LIMIT ?
"""


class SQLiteOutbox(TickBatchedOutbox):
    """The Outbox on one SQLite file; see `relay.store.base.Outbox` for the contract.

    `commits` counts the write transactions committed so far (tests and benchmarks compare it
    with the number of requests to see group commit at work).
    """

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 10.0,
        close_timeout: float = 10.0,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        super().__init__()
        self.path = path
        self.busy_timeout = busy_timeout
        self.close_timeout = close_timeout
        self.checkpoint_seconds = checkpoint_seconds
        self._writer: GroupCommitter | None = None
        self._wal: WalSync | None = None
        self._checkpointer: Checkpointer | None = None
        self._commits_before = 0  # by writers of earlier start/close cycles
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    @property
    def commits(self) -> int:
        return self._commits_before + (self._writer.commits if self._writer else 0)

    async def start(self) -> None:
        """Create the file and schema if needed and start the writer thread; idempotent."""
        if self._writer is not None:
            return
        conn, reader = await asyncio.to_thread(open_file, self.path, self.busy_timeout)
        self._reader = reader
        self._wal = WalSync(self.path)
        self._writer = GroupCommitter(conn, self._wal)
        self._checkpointer = Checkpointer(self.path, self.busy_timeout, self.checkpoint_seconds)

    async def close(self) -> None:
        """Commit the writes already submitted, then stop; waits at most `close_timeout`."""
        writer, self._writer = self._writer, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop, self.close_timeout)
        if writer is not None:
            stopped = await asyncio.to_thread(writer.stop, self.close_timeout)
            self._commits_before += writer.commits
            if not stopped:
                log.error("outbox writer still busy after %.1f s; leaving it", self.close_timeout)
            elif self._wal is not None:
                self._wal.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            with self._read_lock:
                reader.close()

    async def _write(self, work: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        # durable=False: the forwarder's claims and marks; a power cut may undo them, which
        # only sends events again (writer.py)
        if self._writer is None:
            raise Unavailable("The outbox is not started.")
        try:
            return await self._writer.submit(work, durable=durable)
        except sqlite3.Error as exc:
            raise Unavailable(f"The outbox could not write: {exc}") from exc

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._read_lock:
                if self._reader is None:
                    raise Unavailable("The outbox is not started.")
                self._reader.execute("BEGIN")  # one snapshot for all of `work`
                try:
                    return work(self._reader)
                finally:
                    self._reader.execute("COMMIT")

        try:
            return await asyncio.to_thread(locked)
        except sqlite3.Error as exc:
            raise Unavailable(f"The outbox could not read: {exc}") from exc

    async def write_side(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in the writer's next group commit, answered at its commit: the writes of
        a part that keeps a table of its own in this file (`SQLitePacer`)."""
        return await self._write(work, durable=False)

    # `enqueue` (TickBatchedOutbox): calls made in the same event-loop tick share one writer
    # job (see `_flush`), so a burst of requests costs one savepoint and a few `executemany`
    # calls, not dozens of statements each.

    def _flush(self, pending: Enqueues) -> None:
        try:
            if self._writer is None:
                raise Unavailable("The outbox is not started.")
            job = self._writer.submit(lambda conn: enqueue(conn, pending))
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            fail_all(pending, exc)
            return

        def answer(done: asyncio.Future[list[list[Enqueued]]]) -> None:
            if done.cancelled():
                fail_all(pending, Unavailable("The outbox write was cancelled."))
            elif (exc := done.exception()) is not None:
                error = exc if isinstance(exc, Unavailable) else Unavailable(
                    f"The outbox could not write: {exc}"
                )
                fail_all(pending, error)
            else:
                for (_, future), result in zip(pending, done.result()):
                    if not future.done():
                        future.set_result(result)

        job.add_done_callback(answer)

    async def claim(self, space: str, n: int, lease_seconds: float, now: float) -> list[Claimed]:
        """See `Outbox.claim`; the select and the lease are one transaction."""
        if n <= 0:
            return []
        lease_until = now + lease_seconds

        def work(conn: sqlite3.Connection) -> list[Claimed]:
            rows = conn.execute(CLAIM, (space, now, now, n)).fetchall()
            conn.executemany(
                "UPDATE outbox SET lease_until = ? WHERE id = ?",
                [(lease_until, row[0]) for row in rows],
            )
            return [
                Claimed(
                    id=id_,
                    space=space,
                    event_name=name,
                    idempotency_key=key,
                    payload=bytes(payload),
                    attempts=attempts,
                    received_at=received_at,
                    lease_until=lease_until,
                    source=Source(source),
                    twin=None if twin is None else bytes(twin),
                )
                for id_, name, key, payload, attempts, received_at, source, twin in rows
            ]

        return await self._write(work, durable=False)

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        """See `Outbox.delivered`."""
        await self._write_each(
            "UPDATE outbox SET status = 'delivered', delivered_at = ?, changed_at = ?,"
            " lease_until = NULL WHERE id = ? AND status != 'delivered'",
            [(now, now, id_) for id_ in ids],
            durable=False,
        )

    async def retry(self, id: int, at: float, status: int | None, message: str, now: float) -> None:
        """See `Outbox.retry`."""
        await self._write_each(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, lease_until = NULL,"
            " last_status = ?, last_message = ?, changed_at = ? WHERE id = ? AND status = 'queued'",
            [(at, status, message, now, id)],
            durable=False,
        )

    async def dead(self, id: int, status: int | None, message: str, now: float) -> None:
        """See `Outbox.dead`."""
        await self._write_each(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, died_at = ?,"
            " changed_at = ?, lease_until = NULL, last_status = ?, last_message = ?"
            " WHERE id = ? AND status = 'queued'",
            [(now, now, status, message, id)],
            durable=False,
        )

    async def release(self, ids: Sequence[int]) -> None:
        """See `Outbox.release`."""
        await self._write_each(
            "UPDATE outbox SET lease_until = NULL WHERE id = ? AND status = 'queued'",
            [(id_,) for id_ in ids],
            durable=False,
        )

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """See `Outbox.replay`; attempts and the last upstream answer are kept."""
        sql = (
            "UPDATE outbox SET status = 'queued', next_attempt_at = ?, changed_at = ?,"
            " lease_until = NULL, died_at = NULL WHERE status = 'dead'"
        )
        if ids is None:
            return await self._write_each(sql, [(now, now)])
        return await self._write_each(sql + " AND id = ?", [(now, now, id_) for id_ in ids])

    async def _write_each(
        self, sql: str, params: list[tuple[Any, ...]], durable: bool = True
    ) -> int:
        """Run `sql` once per parameter tuple in one job; returns the rows changed."""
        if not params:
            return 0
        return await self._write(lambda conn: conn.executemany(sql, params).rowcount, durable)

    async def prune(self, delivered_before: float, now: float) -> int:
        """See `Outbox.prune`; deletes in chunks of PRUNE_CHUNK rows, one transaction each.

        Also drops the steps logged for `changes` more than STEPS_KEPT_SECONDS before `now`.
        """
        events = await self._delete_in_chunks(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE status = 'delivered' AND delivered_at < ? LIMIT ?)",
            delivered_before,
        )
        await self._delete_in_chunks(
            "DELETE FROM dedup WHERE (space, key) IN (SELECT space, key FROM dedup"
            " WHERE expires_at <= ? LIMIT ?)",
            now,
        )
        # Oldest first, one chunk at a time, stopping at the first chunk that is not all old:
        # bounded work without an index on `at` (steps are logged roughly in time order).
        await self._delete_in_chunks(
            "DELETE FROM outbox_steps WHERE at < ? AND seq IN (SELECT seq FROM outbox_steps"
            " ORDER BY seq LIMIT ?)",
            now - STEPS_KEPT_SECONDS,
        )
        return events

    async def _delete_in_chunks(self, sql: str, cutoff: float) -> int:
        total = 0
        while True:
            deleted = await self._write(
                lambda conn: conn.execute(sql, (cutoff, PRUNE_CHUNK)).rowcount
            )
            total += deleted
            if deleted < PRUNE_CHUNK:
                return total

    async def next_due(self, space: str) -> float | None:
        """See `Outbox.next_due`."""

        def work(conn: sqlite3.Connection) -> float | None:
            (unleased,) = conn.execute(
                "SELECT min(next_attempt_at) FROM outbox INDEXED BY outbox_due"
                " WHERE space = ? AND status = 'queued' AND lease_until IS NULL",
                (space,),
            ).fetchone()
            (leased,) = conn.execute(
                "SELECT min(max(next_attempt_at, lease_until)) FROM outbox INDEXED BY outbox_due"
                " WHERE space = ? AND status = 'queued' AND lease_until IS NOT NULL",
                (space,),
            ).fetchone()
            times = [t for t in (unleased, leased) if t is not None]
            return min(times) if times else None

        return await self._read(work)

    async def dead_letters(self, limit: int = 1000) -> list[DeadEvent]:
        """See `Outbox.dead_letters`."""

        def work(conn: sqlite3.Connection) -> list[DeadEvent]:
            rows = conn.execute(
                "SELECT id, space, event_name, idempotency_key, attempts, last_status,"
                " last_message, received_at, died_at FROM outbox INDEXED BY outbox_dead"
                " WHERE status = 'dead' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                DeadEvent(
                    id=row[0],
                    space=row[1],
                    event_name=row[2],
                    idempotency_key=row[3],
                    attempts=row[4],
                    last_status=row[5],
                    last_message=row[6] or "",
                    received_at=row[7],
                    died_at=row[8],
                )
                for row in rows
            ]

        return await self._read(work)

    async def stats(self) -> OutboxStats:
        """See `Outbox.stats`; reads the trigger-kept counts, so it is cheap at any size.
        Raises Unavailable once the file cannot take an event until a restart (so /readyz
        says not ready)."""
        if self._writer is not None and self._writer.failure is not None:
            raise Unavailable(f"The outbox could not write: {self._writer.failure}")

        def work(conn: sqlite3.Connection) -> OutboxStats:
            stats = OutboxStats()
            for space, bucket, n in conn.execute(
                "SELECT space, bucket, n FROM outbox_counts WHERE n != 0 ORDER BY space"
            ):
                counts = stats.spaces.setdefault(space, dict.fromkeys(BUCKETS, 0))
                counts[bucket] = n
                setattr(stats, bucket, getattr(stats, bucket) + n)
            return stats

        return await self._read(work)

    async def queue_figures(self) -> QueueFigures:
        """See `QueueAges.queue_figures`; in one read snapshot, at the cost figures.py gives."""
        return await self._read(read_figures)

    async def changes(self, after: str | None, limit: int = 1000) -> ChangePage:
        """See `Outbox.changes`; the cursor is "<last outbox id>-<last step seq>"."""
        if after is None:
            return await self._read(present)
        accepted_after, steps_after = parse_cursor(after)
        return await self._read(lambda conn: read_page(conn, accepted_after, steps_after, limit))
