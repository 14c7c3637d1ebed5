"""The outbox file's threads: the writer, which commits jobs in groups, the syncer, which
makes those commits durable, and the checkpointer, which moves the WAL's pages into the
database file.

Group commit: each cycle the writer takes all the jobs waiting, runs them in one transaction
(a savepoint each, so one failing job does not undo the others) and commits once, so many
concurrent requests share one fsync. If the commit fails, every job of the group fails.

Pipelined fsync: the file runs with `synchronous = NORMAL`, so a COMMIT writes the group's
WAL frames (safe from the process being killed) without waiting for the disk. A group with a
durable job (an enqueue: accept means durable) then goes to the syncer, which `fdatasync`s
the WAL and only then answers the group's callers; meanwhile the writer already runs the
next group. One fsync covers every group committed before it started, so under load the
writer's cycle is the transaction alone and the disk's wait overlaps it. It is the guarantee
of `synchronous = FULL` (each answered commit's frames are on disk) without holding the write
lock during the fsync. SQLite itself still syncs the WAL before a checkpoint, the database
file after one, and the WAL's header when it starts reusing the file.

A failed fsync fails its groups and every durable group after it, until a restart (see
`GroupCommitter._sync_failed`).

A group of jobs submitted with `durable=False` alone (the forwarder's claims and marks) is
answered at its commit: losing one of those to a power cut only sends an event again, which
at-least-once allows.

Checkpoints: SQLite would otherwise checkpoint inside the commit that fills the WAL past 1000
pages, and that commit (with every request waiting on it) would pay for copying the pages and
an fsync of the database file; under load that was every few dozen commits. The writer still
checkpoints by itself past `WRITER_CHECKPOINT_PAGES` (schema.py), should the thread fall
behind.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from relay.errors import Unavailable
from relay.sqlite_file import connect

T = TypeVar("T")
Q = TypeVar("Q")
log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 0.5
# A process that only forwards (`comet-relay forward`) commits a few claims and marks a second:
# its checkpoints, each a copy of the same hot pages and an fsync of the database file, come
# every 2 s. That cost 50 us less CPU per delivered event at 12,000/min; where events are
# received, 2 s gave the same throughput with a higher p99, so `serve` keeps 0.5 s
# (bench/README.md, issue 16).
FORWARD_CHECKPOINT_SECONDS = 2.0


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool = True


_Answer = tuple["asyncio.Future[Any]", bool, Any]  # (future, ok, result or exception)
_Answered = tuple[_Job, bool, Any]  # (job, ok, result or exception)


def _take_all(waiting: queue.SimpleQueue[Q]) -> list[Q]:
    """What `waiting` holds, at least one item: waits for the first, takes the rest at once."""
    batch = [waiting.get()]
    while True:
        try:
            batch.append(waiting.get_nowait())
        except queue.Empty:
            return batch


def _settle(answers: list[_Answer]) -> None:
    for future, ok, value in answers:
        if future.done():  # the caller was cancelled; its work is committed all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitter:
    """The writer thread, which runs submitted jobs in groups, one transaction and one commit
    each, and the syncer thread, which makes the durable groups' commits durable with `sync`
    before answering them (see the module docstring). The connection must commit with
    `synchronous = NORMAL` or laxer: `sync` is what makes a commit durable."""

    def __init__(self, conn: sqlite3.Connection, sync: Callable[[], None]) -> None:
        self.conn = conn
        self.commits = 0
        self.synced_commits = 0  # the commits made durable by a sync (a durable job in them)
        self.syncs = 0  # calls of `sync`: one covers every commit made before it
        self._sync = sync
        # Once a sync failed, none after it proves anything: Linux may have dropped the pages
        # it could not write and report that only once, and a WAL frame lost breaks the
        # chain of every frame after it. So every later durable job fails too (a 503: its
        # sender sends again) until a restart, whose recovery keeps what did reach the disk.
        self._sync_failed: Exception | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._to_sync: queue.SimpleQueue[list[_Answered] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closing = False
        self._syncer = threading.Thread(target=self._run_syncer, name="outbox-sync", daemon=True)
        self._syncer.start()
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()

    def submit(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> asyncio.Future[T]:
        """Run `work` in the next group; answered after its commit, and for a durable job
        after the sync that follows it. `durable=False`: the commit need not survive a power
        cut (see the module docstring)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closing:
                raise Unavailable("The outbox is closed.")
            self._jobs.put(_Job(work, loop, future, durable))
        return future

    @property
    def failure(self) -> Exception | None:
        """Why durable writes fail until a restart (a failed fsync), or None."""
        return self._sync_failed

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
                batch = _take_all(self._jobs)
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
            # The groups waiting for a sync are answered before the connection closes.
            self._to_sync.put(None)
            self._syncer.join()
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
        answered = [(job, ok, value) for job, (ok, value) in zip(jobs, outcomes)]
        if any(job.durable for job in jobs):
            self._to_sync.put(answered)
        else:
            self._answer(answered)

    def _run_syncer(self) -> None:
        while True:
            batch = _take_all(self._to_sync)
            groups = [group for group in batch if group is not None]
            if groups:
                self._sync_groups(groups)
            if batch[-1] is None:  # the writer puts it last, after its last group
                return

    def _sync_groups(self, groups: list[list[_Answered]]) -> None:
        answered = [one for group in groups for one in group]
        if self._sync_failed is None:
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - committed, but perhaps not on disk
                log.critical(
                    "OUTBOX FSYNC FAILED (%s): the relay accepts no event until it is restarted",
                    exc,
                )
                self._sync_failed = sqlite3.OperationalError(
                    f"the commit could not be synced to disk ({exc}); restart the relay"
                )
        if self._sync_failed is not None:
            self._fail([job for job, _, _ in answered], self._sync_failed)
            return
        self.syncs += 1
        self.synced_commits += len(groups)
        self._answer(answered)

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
    def _answer(outcomes: list[_Answered]) -> None:
        # One wake-up per event loop for the whole group, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for job, ok, value in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that event loop is closed: nobody is waiting
                pass


class Checkpointer:
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
        conn = connect(self.path, self.busy_timeout)
        try:
            while not self._stopping.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the writer's own checkpoints still bound the WAL
                    log.warning("outbox checkpoint failed: %s", exc)
        finally:
            conn.close()
