"""The default outbox: one SQLite file in WAL mode with `synchronous=FULL`, and group commit.

Every write goes through one writer thread that owns the write connection. Each cycle it takes
all the jobs waiting, runs them in one transaction (a savepoint each, so one failing job does
not undo the others) and commits once, so many concurrent requests share one fsync. A job's
caller is answered only after that commit; if the commit fails, every job of the group fails.

Reads (stats, next_due, dead_letters, changes) use a second connection and never wait for the write
lock. Other processes (a separate forwarder, the CLI) may open the same file at the same time.

A third thread moves the WAL's pages into the database file (a checkpoint) every
`CHECKPOINT_SECONDS`. SQLite would otherwise checkpoint inside the commit that fills the WAL
past 1000 pages, and that commit (with every request waiting on it) would pay for copying the
pages and an fsync of the database file; under load that was every few dozen commits. The
writer still checkpoints by itself past `WRITER_CHECKPOINT_PAGES`, should the thread fall
behind.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relay.errors import Unavailable
from relay.store.base import (
    PRIORITY_CONVERSION,
    PRIORITY_PAGE_VIEW,
    Change,
    ChangePage,
    Claimed,
    DeadEvent,
    NewEvent,
    OutboxStats,
    QueueFigures,
)
from relay.store.coalesce import Coalescer, Pending, fail_all

T = TypeVar("T")
log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: outbox.changed_at and the outbox_steps log (for `outbox tail`)
PRUNE_CHUNK = 1000  # rows per transaction, so pruning never holds the write lock for long
KEYS_PER_QUERY = 500  # dedup keys looked up per SELECT, well under SQLite's variable limit
STEPS_KEPT_SECONDS = 3600.0  # how long the step log behind `changes` keeps a step
BUCKETS = ("queued", "retrying", "delivered", "dead")
CHECKPOINT_SECONDS = 0.5
WRITER_CHECKPOINT_PAGES = 20000  # about 80 MB of WAL with 4 KiB pages
WAL_KEPT_BYTES = 64 * 1024 * 1024  # a WAL larger than this is truncated after a checkpoint


def _count(row: str, sign: str) -> str:
    """Trigger statements adding (`+`) or removing (`-`) `row`'s buckets in outbox_counts."""
    return f"""
    INSERT INTO outbox_counts (space, bucket, n) SELECT {row}.space, {row}.status, {sign}1 WHERE 1
        ON CONFLICT (space, bucket) DO UPDATE SET n = n {sign} 1;
    INSERT INTO outbox_counts (space, bucket, n) SELECT {row}.space, 'retrying', {sign}1
        WHERE {row}.status = 'queued' AND {row}.attempts > 0
        ON CONFLICT (space, bucket) DO UPDATE SET n = n {sign} 1;"""


# outbox_counts is kept by triggers so that stats (and /healthz) cost O(spaces), not a scan of
# millions of delivered rows; the triggers also cover writes made by other processes.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    event_name TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    received_at REAL NOT NULL,
    delivered_at REAL,
    died_at REAL,
    last_status INTEGER,
    last_message TEXT,
    changed_at REAL  -- `now` of the last step after the insert; NULL until then
);
-- Claim order. Index entries sort by (space, priority, id), so claim reads the first due
-- entries without sorting; the trailing columns let it skip leased or not-yet-due entries
-- without touching the table.
CREATE INDEX IF NOT EXISTS outbox_claim
    ON outbox (space, priority, id, next_attempt_at, lease_until) WHERE status = 'queued';
-- next_due: the unleased minimum is one index seek; leased rows are few (in flight).
CREATE INDEX IF NOT EXISTS outbox_due
    ON outbox (space, lease_until, next_attempt_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (id) WHERE status = 'dead';

CREATE TABLE IF NOT EXISTS dedup (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at);

CREATE TABLE IF NOT EXISTS outbox_counts (
    space TEXT NOT NULL,
    bucket TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (space, bucket)
) WITHOUT ROWID;
-- Inserts are counted by _enqueue, once per batch and Space: a trigger per row cost a third
-- of the enqueue's time. Every insert into outbox must go through _enqueue.
DROP TRIGGER IF EXISTS outbox_counts_insert;
CREATE TRIGGER IF NOT EXISTS outbox_counts_delete AFTER DELETE ON outbox BEGIN
    {_count("old", "-")}
END;
CREATE TRIGGER IF NOT EXISTS outbox_counts_update AFTER UPDATE OF status, attempts ON outbox
    WHEN old.status IS NOT new.status OR (old.attempts > 0) IS NOT (new.attempts > 0)
BEGIN
    {_count("old", "-")}
    {_count("new", "+")}
END;

-- Every step after the insert (retrying, delivered, dead, replayed), in commit order, for
-- `changes`. Acceptances need no row here: outbox ids are already in commit order, so the
-- enqueue does no extra work. AUTOINCREMENT: a seq is never reused, even after pruning.
CREATE TABLE IF NOT EXISTS outbox_steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    at REAL,
    attempts INTEGER NOT NULL,
    last_status INTEGER,
    last_message TEXT
);
CREATE TRIGGER IF NOT EXISTS outbox_steps_log AFTER UPDATE OF status, attempts ON outbox
    WHEN old.status IS NOT new.status OR old.attempts IS NOT new.attempts
BEGIN
    INSERT INTO outbox_steps (event_id, state, at, attempts, last_status, last_message)
    VALUES (
        new.id,
        CASE WHEN new.status != 'queued' THEN new.status
             WHEN old.status = 'dead' THEN 'replayed' ELSE 'retrying' END,
        new.changed_at,
        new.attempts + (new.status = 'delivered'),  -- delivered() counts no attempt itself
        CASE WHEN new.status = 'delivered' THEN NULL ELSE new.last_status END,
        CASE WHEN new.status = 'delivered' THEN NULL ELSE new.last_message END
    );
END;
"""

CLAIM = """
SELECT id, event_name, idempotency_key, payload, attempts, received_at
FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND status = 'queued' AND next_attempt_at <= ?
  AND (lease_until IS NULL OR lease_until <= ?)
ORDER BY priority, id
LIMIT ?
"""

# queue_figures: both stay inside the claim index's (space, priority) range
QUEUED_OF_PRIORITY = """
SELECT count(*) FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND priority = ? AND status = 'queued'
"""
OLDEST_OF_PRIORITY = """
SELECT received_at FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND priority = ? AND status = 'queued' ORDER BY id LIMIT 1
"""

# `changes`: both read a primary key from the cursor on, so following costs O(new rows).
ACCEPTED_AFTER = """
SELECT id, space, event_name, idempotency_key, received_at
FROM outbox WHERE id > ? ORDER BY id LIMIT ?
"""
STEPS_AFTER = """
SELECT s.seq, s.event_id, s.state, s.at, s.attempts, s.last_status, s.last_message,
       o.space, o.event_name, o.idempotency_key
FROM outbox_steps AS s LEFT JOIN outbox AS o ON o.id = s.event_id
WHERE s.seq > ? ORDER BY s.seq LIMIT ?
"""


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Answer = tuple["asyncio.Future[Any]", bool, Any]  # (future, ok, result or exception)


def _settle(answers: list[_Answer]) -> None:
    for future, ok, value in answers:
        if future.done():  # the caller was cancelled; its work is committed all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer issues BEGIN/COMMIT itself.
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


class _GroupCommitter:
    """The writer thread: runs submitted jobs in groups, one transaction and one commit each."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commits = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closing:
                raise Unavailable("The outbox is closed.")
            self._jobs.put(_Job(work, loop, future))
        return future

    def stop(self, timeout: float) -> bool:
        """Finish the jobs already submitted, then stop; False if that took over `timeout`."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        jobs: list[_Job] = []
        try:
            while True:
                batch = [self._jobs.get()]
                while True:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                # stop() puts its sentinel last and no job can follow it.
                jobs = [job for job in batch if job is not None]
                if jobs:
                    self._run_group(jobs)
                if batch[-1] is None:
                    return
        except Exception:  # a bug; still never leave a caller waiting for a dead thread
            log.exception("outbox writer stopped")
            with self._lock:
                self._closing = True
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    jobs.append(job)
            self._fail(jobs, Unavailable("The outbox writer stopped."))
        finally:
            self.conn.close()

    def _run_group(self, jobs: list[_Job]) -> None:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail(jobs, exc)
            return
        outcomes: list[tuple[bool, Any]] = []
        for job in jobs:
            try:
                conn.execute("SAVEPOINT job")
                outcome: tuple[bool, Any] = (True, job.work(conn))
                conn.execute("RELEASE job")
            except Exception as exc:  # noqa: BLE001 - the job's caller gets its exception
                if not self._undo_job(conn):
                    # SQLite rolled the whole transaction back (I/O error, disk full, ...):
                    # the jobs that succeeded before this one are undone too.
                    self._rollback()
                    lost = sqlite3.OperationalError(f"transaction lost to another job: {exc}")
                    self._answer([(j, False, exc if j is job else lost) for j in jobs])
                    return
                outcome = (False, exc)
            outcomes.append(outcome)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._fail(jobs, exc)
            return
        self.commits += 1
        self._answer([(job, ok, value) for job, (ok, value) in zip(jobs, outcomes)])

    def _undo_job(self, conn: sqlite3.Connection) -> bool:
        if not conn.in_transaction:
            return False
        try:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
        except sqlite3.Error:
            return False
        return True

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("outbox rollback failed")

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        self._answer([(job, False, exc) for job in jobs])

    @staticmethod
    def _answer(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        # One wake-up per event loop for the whole group, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for job, ok, value in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that event loop is closed: nobody is waiting
                pass


class _Checkpointer:
    """A thread with its own connection that checkpoints the WAL (PASSIVE: it never blocks the
    writer or a reader) every `interval` seconds until stopped."""

    def __init__(self, path: str, busy_timeout: float, interval: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.interval = interval
        self.checkpoints = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        conn = _connect(self.path, self.busy_timeout)
        try:
            while not self._stopping.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the writer's own checkpoints still bound the WAL
                    log.warning("outbox checkpoint failed: %s", exc)
        finally:
            conn.close()


class SQLiteOutbox:
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
        self.path = path
        self.busy_timeout = busy_timeout
        self.close_timeout = close_timeout
        self.checkpoint_seconds = checkpoint_seconds
        self._writer: _GroupCommitter | None = None
        self._checkpointer: _Checkpointer | None = None
        self._commits_before = 0  # by writers of earlier start/close cycles
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._coalescer = Coalescer(self._flush)

    @property
    def commits(self) -> int:
        return self._commits_before + (self._writer.commits if self._writer else 0)

    async def start(self) -> None:
        """Create the file and schema if needed and start the writer thread; idempotent."""
        if self._writer is not None:
            return
        conn, reader = await asyncio.to_thread(self._open)
        self._reader = reader
        self._writer = _GroupCommitter(conn)
        self._checkpointer = _Checkpointer(self.path, self.busy_timeout, self.checkpoint_seconds)

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path, self.busy_timeout)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise Unavailable(f"{self.path}: SQLite could not use WAL mode (got {mode!r}).")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_KEPT_BYTES}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise Unavailable(
                    f"{self.path}: outbox schema {version} is newer than this relay's "
                    f"({SCHEMA_VERSION}); upgrade the relay."
                )
            if 0 < version < SCHEMA_VERSION:  # only pre-release files; there is no upgrade
                raise Unavailable(
                    f"{self.path}: outbox schema {version} was made by a development version "
                    f"of the relay; deliver what it holds with that version, then remove it."
                )
            conn.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
            reader = _connect(self.path, self.busy_timeout)
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn, reader

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
        reader, self._reader = self._reader, None
        if reader is not None:
            with self._read_lock:
                reader.close()

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise Unavailable("The outbox is not started.")
        try:
            return await self._writer.submit(work)
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

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[bool]:
        """See `Outbox.enqueue`; a new event is due at `now`.

        Calls made in the same event-loop tick share one writer job (see `_flush`), so a
        burst of requests costs one savepoint and a few `executemany` calls, not dozens of
        statements each.
        """
        return await self._coalescer.submit(events, now)

    def _flush(self, pending: list[Pending]) -> None:
        try:
            if self._writer is None:
                raise Unavailable("The outbox is not started.")
            job = self._writer.submit(lambda conn: _enqueue(conn, pending))
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            fail_all(pending, exc)
            return

        def answer(done: asyncio.Future[list[list[bool]]]) -> None:
            if done.cancelled():
                fail_all(pending, Unavailable("The outbox write was cancelled."))
            elif (exc := done.exception()) is not None:
                error = exc if isinstance(exc, Unavailable) else Unavailable(
                    f"The outbox could not write: {exc}"
                )
                fail_all(pending, error)
            else:
                for (_, _, future), result in zip(pending, done.result()):
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
                )
                for id_, name, key, payload, attempts, received_at in rows
            ]

        return await self._write(work)

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        """See `Outbox.delivered`."""
        await self._write_each(
            "UPDATE outbox SET status = 'delivered', delivered_at = ?, changed_at = ?,"
            " lease_until = NULL WHERE id = ? AND status != 'delivered'",
            [(now, now, id_) for id_ in ids],
        )

    async def retry(self, id: int, at: float, status: int | None, message: str, now: float) -> None:
        """See `Outbox.retry`."""
        await self._write_each(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, lease_until = NULL,"
            " last_status = ?, last_message = ?, changed_at = ? WHERE id = ? AND status = 'queued'",
            [(at, status, message, now, id)],
        )

    async def dead(self, id: int, status: int | None, message: str, now: float) -> None:
        """See `Outbox.dead`."""
        await self._write_each(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, died_at = ?,"
            " changed_at = ?, lease_until = NULL, last_status = ?, last_message = ?"
            " WHERE id = ? AND status = 'queued'",
            [(now, now, status, message, id)],
        )

    async def release(self, ids: Sequence[int]) -> None:
        """See `Outbox.release`."""
        await self._write_each(
            "UPDATE outbox SET lease_until = NULL WHERE id = ? AND status = 'queued'",
            [(id_,) for id_ in ids],
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

    async def _write_each(self, sql: str, params: list[tuple[Any, ...]]) -> int:
        """Run `sql` once per parameter tuple in one job; returns the rows changed."""
        if not params:
            return 0
        return await self._write(lambda conn: conn.executemany(sql, params).rowcount)

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
        """See `Outbox.stats`; reads the trigger-kept counts, so it is cheap at any size."""

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
        """See `QueueAges.queue_figures`, in one read snapshot: the queued count comes from
        the trigger-kept counts, the conversions are counted on the claim index (so the cost
        grows with the queued conversions only) and page views are the rest; the oldest of
        each priority is one index seek."""

        def work(conn: sqlite3.Connection) -> QueueFigures:
            figures = QueueFigures()
            for space, queued in conn.execute(
                "SELECT space, n FROM outbox_counts WHERE bucket = 'queued' AND n > 0"
            ).fetchall():
                (conversions,) = conn.execute(
                    QUEUED_OF_PRIORITY, (space, PRIORITY_CONVERSION)
                ).fetchone()
                depths = {
                    PRIORITY_CONVERSION: conversions, PRIORITY_PAGE_VIEW: queued - conversions
                }
                for priority, depth in depths.items():
                    if depth <= 0:
                        continue
                    figures.depth[(space, priority)] = depth
                    row = conn.execute(OLDEST_OF_PRIORITY, (space, priority)).fetchone()
                    if row is not None:
                        figures.oldest[(space, priority)] = row[0]
            return figures

        return await self._read(work)

    async def changes(self, after: str | None, limit: int = 1000) -> ChangePage:
        """See `Outbox.changes`; the cursor is "<last outbox id>-<last step seq>"."""
        if after is None:
            return await self._read(_present)
        accepted_after, steps_after = _parse_cursor(after)
        return await self._read(lambda conn: _changes(conn, accepted_after, steps_after, limit))


def _present(conn: sqlite3.Connection) -> ChangePage:
    (last_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
    (last_seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox_steps").fetchone()
    return ChangePage([], f"{last_id}-{last_seq}")


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        accepted, steps = (int(part) for part in cursor.split("-"))
    except ValueError:
        raise ValueError(f"not a cursor of the SQLite outbox: {cursor!r}") from None
    return accepted, steps


def _changes(
    conn: sqlite3.Connection, accepted_after: int, steps_after: int, limit: int
) -> ChangePage:
    """One page of `changes`, read in one snapshot: the acceptances, then the later steps."""
    out = [
        Change(at, id_, space, name, key, "accepted")
        for id_, space, name, key, at in conn.execute(ACCEPTED_AFTER, (accepted_after, limit))
    ]
    if out:
        accepted_after = out[-1].id
    held_back = len(out) == limit  # more acceptances wait: their steps must wait too
    steps = conn.execute(STEPS_AFTER, (steps_after, limit))
    for seq, event_id, state, at, attempts, status, message, space, name, key in steps:
        if held_back and event_id > accepted_after:
            break
        steps_after = seq
        if space is None:  # the event was pruned meanwhile
            continue
        out.append(
            Change(at or 0.0, event_id, space, name, key, state, attempts, status, message or "")
        )
    return ChangePage(out, f"{accepted_after}-{steps_after}")


INSERT_EVENT = (
    "INSERT INTO outbox (space, event_name, idempotency_key, priority, payload, status,"
    " next_attempt_at, received_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)"
)
COUNT_QUEUED = (
    "INSERT INTO outbox_counts (space, bucket, n) VALUES (?, 'queued', ?)"
    " ON CONFLICT (space, bucket) DO UPDATE SET n = n + excluded.n"
)
UPSERT_KEY = (
    "INSERT INTO dedup (space, key, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (space, key) DO UPDATE SET expires_at = excluded.expires_at"
)


def _enqueue(conn: sqlite3.Connection, pending: list[Pending]) -> list[list[bool]]:
    """Dedup and insert the events of several enqueue calls; one list of answers per call.

    The live keys of the whole batch are looked up at once, and keys claimed earlier in the
    batch are tracked in memory, so the inserts are made at the end with `executemany`.
    """
    taken = _live_keys(conn, pending)
    rows: list[tuple[object, ...]] = []
    keys: list[tuple[str, str, float]] = []
    answers: list[list[bool]] = []
    for events, now, _ in pending:
        queued: list[bool] = []
        for event in events:
            mine = [(event.space, key) for key in event.dedup_keys]
            if any(k in taken for k in mine):
                queued.append(False)
                continue
            taken.update(mine)
            rows.append((event.space, event.event_name, event.idempotency_key, event.priority,
                         event.payload, now, event.received_at))
            keys.extend((space, key, event.dedup_until) for space, key in mine)
            queued.append(True)
        answers.append(queued)
    conn.executemany(INSERT_EVENT, rows)
    conn.executemany(UPSERT_KEY, keys)
    conn.executemany(COUNT_QUEUED, Counter(row[0] for row in rows).items())
    return answers


def _live_keys(conn: sqlite3.Connection, pending: list[Pending]) -> set[tuple[str, str]]:
    """The batch's dedup keys that are stored and unexpired at the batch's earliest `now`."""
    wanted: dict[str, set[str]] = {}
    for events, _, _ in pending:
        for event in events:
            if event.dedup_keys:
                wanted.setdefault(event.space, set()).update(event.dedup_keys)
    if not wanted:
        return set()
    now = min(now for _, now, _ in pending)
    live: set[tuple[str, str]] = set()
    for space, space_keys in wanted.items():
        ordered = list(space_keys)
        for i in range(0, len(ordered), KEYS_PER_QUERY):
            chunk = ordered[i : i + KEYS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            live.update(
                (space, key)
                for (key,) in conn.execute(
                    f"SELECT key FROM dedup WHERE space = ? AND key IN ({marks})"
                    " AND expires_at > ?",
                    (space, *chunk, now),
                )
            )
    return live


