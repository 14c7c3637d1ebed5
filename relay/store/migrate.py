"""Moving a SQLite outbox into Redis: `comet-relay outbox migrate --to redis://...`.

What moves: every queued event (with its source, the browser twin it met, its attempts, due
time, a hold included, and last upstream answer; leases are dropped, as after a restart) and
every dead event, in acceptance order, and the dedup keys still live at `now`, each naming the
event it named, so a duplicate sent after the move is still refused and a twin still merges.
Delivered events stay in the SQLite file (only their counts and dedup keys matter, and the keys
move, naming an event that is not in Redis, with its source and key). A file of an older
schema is upgraded first, as a relay would at start.

Nothing is lost or duplicated, even if the migration is interrupted and run again: events move
in chunks; a chunk is written to Redis, with the dedup keys that name its events, in one script
per Space, marked there by its SQLite id and idempotency key, and only then deleted from SQLite.
A chunk that reached Redis but was not yet deleted when the run stopped is recognised by its
marks and skipped by the next run. The marks are removed when a run completes.

Stop every relay first: a forwarder delivering from the SQLite file while it is being moved
could deliver an event that is also moved. A lease that has not run out is taken as a sign
that one is still running, and the migration refuses to start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.errors import MigrationError, Unavailable
from relay.rules.events import Source
from relay.store.redis import ImportedEvent, ImportedKey, RedisOutbox
from relay.store.sqlite.schema import SCHEMA_VERSION, open_file

CHUNK = 500

EVENTS = """
SELECT id, space, status, priority, event_name, idempotency_key, payload, received_at,
       next_attempt_at, attempts, last_status, last_message, died_at, source, twin
FROM outbox WHERE status IN ('queued', 'dead') AND id > ? ORDER BY id LIMIT ?
"""
# Each live key with the event it names, if that event is still in the file: its status, key.
LIVE_KEYS = """
SELECT d.space, d.key, d.expires_at, d.event_id, d.source, o.status, o.idempotency_key
FROM dedup d LEFT JOIN outbox o ON o.id = d.event_id
WHERE d.expires_at > ? ORDER BY d.space, d.key
"""
LEASED = "SELECT count(*) FROM outbox WHERE status = 'queued' AND lease_until > ?"
MOVED = ("queued", "dead")  # the statuses of the events that move


@dataclass
class MigrationReport:
    """What a migration moved. `skipped` events had reached Redis in an interrupted run."""

    queued: int = 0
    dead: int = 0
    dedup_keys: int = 0
    skipped: int = 0


async def migrate(
    sqlite_path: str,
    redis_url: str,
    now: float,
    *,
    chunk: int = CHUNK,
    progress: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Move the queued and dead events and the live dedup keys of the SQLite outbox at
    `sqlite_path` into the Redis at `redis_url`; see the module docstring.

    Raises MigrationError if the file is not an outbox or a relay seems to be running, and
    relay.errors.Unavailable if Redis fails (run it again: it resumes). `progress` is
    called after each chunk.
    """
    conn = _open(sqlite_path)
    target = RedisOutbox(redis_url)
    try:
        leased = conn.execute(LEASED, (now,)).fetchone()[0]
        if leased:
            raise MigrationError(
                f"{sqlite_path}: {leased} events are leased to a running forwarder; stop every "
                "relay that uses this outbox, wait for the leases to run out, then migrate."
            )
        await target.start()
        report = MigrationReport()
        keys = _live_keys(conn, now)
        report.dedup_keys = await _move_keys(keys.alone, target, now) + sum(
            len(named) for named in keys.of_event.values()
        )
        spaces = await _move_events(conn, target, now, chunk, keys, report, progress)
        await target.forget_imports(spaces)
        return report
    finally:
        await target.close()
        conn.close()


def _open(path: str) -> sqlite3.Connection:
    """The outbox file, upgraded to this relay's schema if it is older."""
    if not Path(path).is_file():
        raise MigrationError(f"{path}: no such SQLite outbox")
    conn = _connect(path)
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        conn.close()
        try:
            for upgraded in open_file(path, 10):
                upgraded.close()
        except (Unavailable, sqlite3.Error) as exc:
            raise MigrationError(f"{path}: cannot migrate this outbox ({exc})") from exc
        conn = _connect(path)
    return conn


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            f"file:{Path(path).resolve()}?mode=rw", uri=True, isolation_level=None, timeout=10
        )
        conn.execute("SELECT 1 FROM outbox, dedup LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise MigrationError(f"{path}: not a SQLite outbox ({exc})") from exc
    return conn


@dataclass
class _Keys:
    """The live dedup keys: by the SQLite id of the queued or dead event each names (they move
    with it), and by Space the others (their event stays behind, or is gone)."""

    of_event: dict[int, list[tuple[str, float]]]
    alone: dict[str, list[ImportedKey]]


def _live_keys(conn: sqlite3.Connection, now: float) -> _Keys:
    keys = _Keys({}, {})
    for space, key, until, event_id, source, status, idem in conn.execute(LIVE_KEYS, (now,)):
        if status in MOVED:
            keys.of_event.setdefault(event_id, []).append((key, until))
        else:  # its event's key, or (as the SQLite outbox says it) the key's last part
            other = idem if idem is not None else key.split(":", 2)[-1]
            keys.alone.setdefault(space, []).append(ImportedKey(key, until, Source(source), other))
    return keys


async def _move_keys(
    by_space: dict[str, list[ImportedKey]], target: RedisOutbox, now: float
) -> int:
    """Copy the live dedup keys whose event does not move (each keeps the later expiry if
    Redis has it too, and what it names there, if anything)."""
    for space, keys in by_space.items():
        for i in range(0, len(keys), CHUNK):
            await target.import_events(space, [], keys[i : i + CHUNK], now)
    return sum(len(keys) for keys in by_space.values())


async def _move_events(
    conn: sqlite3.Connection,
    target: RedisOutbox,
    now: float,
    chunk: int,
    keys: _Keys,
    report: MigrationReport,
    progress: Callable[[MigrationReport], None] | None,
) -> set[str]:
    """Move the events chunk by chunk, each with the keys that name it: into Redis, then out
    of SQLite. The Spaces touched."""
    spaces: set[str] = set()
    last_id = 0
    while rows := conn.execute(EVENTS, (last_id, chunk)).fetchall():
        by_space: dict[str, list[ImportedEvent]] = {}
        for row in rows:
            by_space.setdefault(row[1], []).append(_imported(row, keys.of_event.get(row[0], [])))
        for space, events in by_space.items():
            added = await target.import_events(space, events, [], now)
            report.skipped += len(events) - added
        spaces.update(by_space)
        report.queued += sum(1 for row in rows if row[2] == "queued")
        report.dead += sum(1 for row in rows if row[2] == "dead")
        last_id = rows[-1][0]
        _delete(conn, [row[0] for row in rows])
        if progress is not None:
            progress(report)
    return spaces


def _imported(row: tuple[Any, ...], keys: list[tuple[str, float]]) -> ImportedEvent:
    (id_, _, status, priority, name, key, payload, received_at, next_at, attempts,
     last_status, last_message, died_at, source, twin) = row  # fmt: skip
    return ImportedEvent(
        mark=f"sqlite:{id_}:{key}",
        dead=status == "dead",
        priority=int(priority),
        event_name=str(name),
        idempotency_key=str(key),
        payload=bytes(payload),
        received_at=float(received_at),
        next_attempt_at=float(next_at),
        attempts=int(attempts),
        last_status=None if last_status is None else int(last_status),
        last_message=str(last_message or ""),
        died_at=None if died_at is None else float(died_at),
        source=Source(source),
        twin=None if twin is None else bytes(twin),
        keys=tuple(keys),
    )


def _delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete the moved rows in one transaction (the count triggers keep stats right)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
