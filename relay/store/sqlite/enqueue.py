"""The enqueue's writer job: dedup and insert the events of one event-loop tick's calls.

Inserts are counted in outbox_counts here, once per batch and Space, not by a trigger (see
schema.sql): every insert into outbox must go through `enqueue`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from relay.store.base import Enqueues

KEYS_PER_QUERY = 500  # dedup keys looked up per SELECT, well under SQLite's variable limit

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


def enqueue(conn: sqlite3.Connection, pending: Enqueues) -> list[list[bool]]:
    """Dedup and insert the events of several enqueue calls; one list of answers per call.

    The live keys of the whole batch are looked up at once, and keys claimed earlier in the
    batch are tracked in memory, so the inserts are made at the end with `executemany`.
    """
    taken = _live_keys(conn, pending)
    rows: list[tuple[object, ...]] = []
    keys: list[tuple[str, str, float]] = []
    answers: list[list[bool]] = []
    for (events, now), _ in pending:
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


def _live_keys(conn: sqlite3.Connection, pending: Enqueues) -> set[tuple[str, str]]:
    """The batch's dedup keys that are stored and unexpired at the batch's earliest `now`."""
    wanted: dict[str, set[str]] = {}
    for (events, _), _ in pending:
        for event in events:
            if event.dedup_keys:
                wanted.setdefault(event.space, set()).update(event.dedup_keys)
    if not wanted:
        return set()
    now = min(now for (_, now), _ in pending)
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
