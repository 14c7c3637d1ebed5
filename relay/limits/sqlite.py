"""The rate limiter shared by the worker processes of one SQLite file (`serve --workers N`).

The same bucket as `relay.limits.memory.MemoryRateLimiter` (at most `limit` tokens, refilled
at `limit` per minute; the same `Decision` numbers), kept in the `rate_bucket` table of the
outbox's own file, so N workers spend one allowance instead of N. With one worker the memory
limiter does the same job for free, and `open_limiter` picks it.

The calls of one event-loop tick are one write transaction (`tick.TickBatch`, as the Redis
limiter shares one round trip), run on a thread of its own: `BEGIN IMMEDIATE` takes the file's
write lock, so two workers never both spend the last token. It commits with
`synchronous = NORMAL`: a bucket lost to a power cut only forgives a minute's spending, so it
is not worth an fsync. Buckets idle for over a minute have refilled and are deleted now and
then, so client addresses cost no space for long.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable

from relay.errors import Unavailable
from relay.lifecycle import Lifecycle
from relay.limits.base import Decision, decision, refilled
from relay.sqlite_file import open_side_table
from relay.tick import Pending, TickBatch, fail_all

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rate_bucket"
    " (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID"
)
READ = "SELECT tokens, updated_at FROM rate_bucket WHERE key = ?"
WRITE = "INSERT OR REPLACE INTO rate_bucket (key, tokens, updated_at) VALUES (?, ?, ?)"
PRUNE = "DELETE FROM rate_bucket WHERE updated_at < ?"
PRUNE_SECONDS = 60.0  # a bucket untouched this long is full again: its row says nothing

# (key, limit per minute, cost); cost 0 is a peek
_Call = tuple[str, int, int]


class SQLiteRateLimiter(Lifecycle):
    """Token buckets shared by every process on one SQLite file; async `take` and `peek`.

    Call `start` before use and `close` at shutdown. If the file cannot be written (locked
    past `busy_timeout`, disk full) the methods raise `relay.errors.Unavailable` (503).
    """

    def __init__(
        self, path: str, clock: Callable[[], float] = time.time, *, busy_timeout: float = 10.0
    ) -> None:
        self.path = path
        self.clock = clock
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one transaction at a time on the connection
        self._batch: TickBatch[_Call, Decision] = TickBatch(self._send)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruned_at = 0.0

    async def start(self) -> None:
        """Open the file and create the table if needed; idempotent."""
        if self._conn is None:
            self._conn = await asyncio.to_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        return open_side_table(self.path, self.busy_timeout, SCHEMA)

    async def close(self) -> None:
        """Wait for the transactions under way, then close the file; idempotent."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            with self._lock:
                conn.close()

    async def take(self, key: str, limit_per_minute: int, cost: int = 1) -> Decision:
        """Spend `cost` of `key`'s allowance, if that much is left (one transaction, shared
        with the other calls of the same event-loop tick)."""
        return await self._bucket(key, limit_per_minute, cost)

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        """What `take` would report, without spending anything."""
        return await self._bucket(key, limit_per_minute, 0)

    async def _bucket(self, key: str, limit: int, cost: int) -> Decision:
        if limit <= 0:
            raise ValueError(f"a rate limit must be positive, got {limit}")
        return await self._batch.submit((key, limit, cost))

    def _send(self, pending: Pending[_Call, Decision]) -> None:
        task = asyncio.ensure_future(self._run(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pending: Pending[_Call, Decision]) -> None:
        try:
            results = await asyncio.to_thread(self._spend, [call for call, _ in pending])
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets it
            fail_all(pending, Unavailable(f"The rate limiter's file failed: {exc}"))
            return
        for (_, future), result in zip(pending, results):
            if not future.done():
                future.set_result(result)

    def _spend(self, calls: list[_Call]) -> list[Decision]:
        """One transaction for every call of one tick, in the order they were made."""
        now = self.clock()
        with self._lock:
            conn = self._conn
            if conn is None:
                raise Unavailable("The rate limiter is closed.")
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [self._one(conn, call, now) for call in calls]
                if now - self._pruned_at >= PRUNE_SECONDS:
                    conn.execute(PRUNE, (now - PRUNE_SECONDS,))
                    self._pruned_at = now
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return results

    @staticmethod
    def _one(conn: sqlite3.Connection, call: _Call, now: float) -> Decision:
        key, limit, cost = call
        row = conn.execute(READ, (key,)).fetchone()
        tokens = float(limit) if row is None else refilled(row[0], row[1], now, limit)
        allowed = tokens >= cost
        if cost and allowed:
            tokens -= cost
        if cost:
            conn.execute(WRITE, (key, tokens, now))
        return decision(allowed, limit, tokens, max(cost, 1))
