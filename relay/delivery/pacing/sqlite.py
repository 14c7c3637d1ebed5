"""The upstream pacer of a SQLite deployment, kept in the outbox's own file.

Every forwarder on one SQLite file (`serve`, or `serve --no-forward` beside one or more
`comet-relay forward` processes) reserves its start times from one row per Space, so they keep
a Space's `upstream_rate_per_minute` together, and a hold (a 429's Retry-After, a pause after
401/403) survives a killed process: its restart waits out the hold instead of sending at once.

Each write is one short write transaction, run in a thread (a read of the next slot is made on
the caller's thread, see `next_slot`): on a connection of its own, or, given the process's
outbox on the same file (`writer`), as a job of the outbox's writer thread, in its next group
commit. Either commits with `synchronous = NORMAL`: in WAL mode that survives the process
being killed (what the hold is for), though not a power cut, and costs no fsync. Sharing the
outbox's writer saves a thread round trip, and the outbox's connection then keeps its page
cache, which SQLite drops whenever another connection has written the file (bench/README.md,
issue 16). A slot further ahead than
`MAX_AHEAD_SECONDS` (a clock set back, or a test's clock) counts as that far, so a stale row
never stalls delivery for long.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from relay.delivery.pacing.base import slots
from relay.errors import Unavailable
from relay.lifecycle import Lifecycle
from relay.sqlite_file import connect, open_side_table

T = TypeVar("T")

MAX_AHEAD_SECONDS = 3600.0  # the longest hold the forwarder asks for (Retry-After's cap)
SCHEMA = "CREATE TABLE IF NOT EXISTS pace (space TEXT PRIMARY KEY, next_slot REAL NOT NULL)"
UPSERT = (
    "INSERT INTO pace (space, next_slot) VALUES (?, ?)"
    " ON CONFLICT (space) DO UPDATE SET next_slot = excluded.next_slot"
)


class SharedWriter(Protocol):
    """The writer of an outbox on the same file (`relay.store.sqlite.SQLiteOutbox`)."""

    async def write_side(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one of the writer's write transactions; answered at its commit, its
        failures raised as `Unavailable`."""
        ...


class SQLitePacer(Lifecycle):
    """See `relay.delivery.pacing.base.Pacer`; the next slot of each Space is a row of the
    `pace` table. `writer`: the outbox of this process on the same file, started before and
    closed after this pacer, whose writer thread makes the pacer's writes too."""

    def __init__(
        self, path: str, *, busy_timeout: float = 10.0, writer: SharedWriter | None = None
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.writer = writer
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # next_slot's, on the caller's thread
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Open the connections and create the table if needed; idempotent."""
        if self._conn is None:
            self._conn = await self._run_unlocked(self._open)
            self._reader = await self._run_unlocked(self._open_reader)

    def _open(self) -> sqlite3.Connection:
        return open_side_table(self.path, self.busy_timeout, SCHEMA)

    def _open_reader(self) -> sqlite3.Connection:
        reader = connect(self.path, 0.0)  # never waits: see next_slot
        reader.execute("PRAGMA query_only = ON")
        return reader

    async def close(self) -> None:
        """Close the connections; idempotent."""
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if conn is not None:
            with self._lock:
                conn.close()

    async def reserve(self, space: str, interval: float, now: float) -> float:
        """See `Pacer.reserve`."""

        def work(conn: sqlite3.Connection) -> float:
            start = max(now, _stored(conn, space, now))
            conn.execute(UPSERT, (space, start + interval))
            return start

        return await self._write(work)

    async def reserve_batch(self, space: str, interval: float, n: int, now: float) -> list[float]:
        """See `Pacer.reserve_batch`; one write transaction for all `n`."""

        def work(conn: sqlite3.Connection) -> float:
            start = max(now, _stored(conn, space, now))
            conn.execute(UPSERT, (space, start + n * interval))
            return start

        return slots(await self._write(work), interval, n)

    async def hold(self, space: str, until: float, now: float) -> None:
        """See `Pacer.hold`."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT, (space, max(until, _stored(conn, space, now))))

        await self._write(work)

    async def next_slot(self, space: str) -> float:
        """See `Pacer.next_slot`. Read on the caller's thread, without waiting: a WAL reader
        does not wait for writers, and in the rare case it would (another connection is
        recovering the WAL), the read goes to a thread as the writes do. The forwarder asks
        once per batch; the thread's round trip cost more than the read (bench/README.md)."""
        reader = self._reader
        if reader is not None:
            try:
                return _next_slot(reader, space)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise Unavailable(f"The pacer could not use the outbox file: {exc}") from exc
        return await self._run(lambda conn: _next_slot(conn, space))

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.writer is not None:  # it answers its failures as Unavailable
            if self._conn is None:
                raise Unavailable("The pacer is not started.")
            return await self.writer.write_side(work)

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")  # the read and the write of one slot are atomic
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(transaction)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._conn is None:
                    raise Unavailable("The pacer is not started.")
                return work(self._conn)

        return await self._run_unlocked(locked)

    @staticmethod
    async def _run_unlocked(work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except sqlite3.Error as exc:
            raise Unavailable(f"The pacer could not use the outbox file: {exc}") from exc


def _next_slot(conn: sqlite3.Connection, space: str) -> float:
    row = conn.execute("SELECT next_slot FROM pace WHERE space = ?", (space,)).fetchone()
    return float(row[0]) if row else 0.0


def _stored(conn: sqlite3.Connection, space: str, now: float) -> float:
    """The Space's stored next slot, at most `MAX_AHEAD_SECONDS` after `now`."""
    return min(_next_slot(conn, space), now + MAX_AHEAD_SECONDS)
