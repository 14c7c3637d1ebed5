"""The enqueue's writer job: dedup, merge twins and insert the events of one event-loop
tick's calls, in one transaction (the rules are `Outbox.enqueue`'s, relay.store.base).

Every dedup key names the event it ended in (`dedup.event_id`) and that event's source, so a
later event finds what it meets in one lookup. New events get their ids here, in order from
the table's AUTOINCREMENT counter (the writer holds the only write lock), so that keys can
name an event of the same batch, a twin can merge into one, and the inserts are a few
multi-row INSERTs at the end (`ROWS_PER_INSERT` rows each): one statement step each, where
`executemany` stepped once per row, and each step releases and retakes the GIL that the
event loop is waiting for. Inserts are counted in outbox_counts here, once per batch and
Space, not by a trigger (see schema.sql): every insert into outbox must go through `enqueue`.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from relay.rules.events import PRIORITY_API_CONVERSION, PRIORITY_PAGE_VIEW, NewEvent, Source
from relay.store.base import QUEUED, Enqueued, Enqueues, Outcome

T = TypeVar("T")

KEYS_PER_QUERY = 500  # dedup keys looked up per SELECT, well under SQLite's variable limit
ROWS_PER_INSERT = 50  # rows per multi-row INSERT: 50 × 10 values, under SQLite's 999

INSERT_EVENT = (
    "INSERT INTO outbox (id, space, event_name, idempotency_key, priority, payload, status,"
    " next_attempt_at, received_at, source, twin) VALUES "
)
EVENT_VALUES = "(?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)"
COUNT_QUEUED = (
    "INSERT INTO outbox_counts (space, bucket, n) VALUES (?, 'queued', ?)"
    " ON CONFLICT (space, bucket) DO UPDATE SET n = n + excluded.n"
)
INSERT_KEY = "INSERT INTO dedup (space, key, expires_at, event_id, source) VALUES "
KEY_VALUES = "(?, ?, ?, ?, ?)"
# A key of the batch may come twice (a merge renames its owner): the rows of one multi-row
# INSERT are inserted in turn, so the second meets the first here, as with executemany.
ON_KEY_CONFLICT = (
    " ON CONFLICT (space, key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at),"
    " event_id = excluded.event_id, source = excluded.source"
)
STORED = "SELECT status, lease_until, attempts, twin IS NOT NULL FROM outbox WHERE id = ?"
TAKE_OVER = (
    "UPDATE outbox SET twin = payload, payload = ?, idempotency_key = ?, source = 'api',"
    " priority = ?, next_attempt_at = min(next_attempt_at, ?) WHERE id = ?"
)
ADD_TWIN = "UPDATE outbox SET twin = ?, next_attempt_at = min(next_attempt_at, ?) WHERE id = ?"


@dataclass
class _Named:
    """What a live dedup key names: an event (None once pruned), its source, its key."""

    event_id: int | None
    source: str
    key: str


@dataclass
class _Row:
    """A new event of this batch, inserted at the end."""

    id: int
    event: NewEvent
    due: float
    source: str
    key: str
    payload: bytes
    priority: int
    twin: bytes | None = None

    def values(self) -> tuple[object, ...]:
        e = self.event
        return (self.id, e.space, e.event_name, self.key, self.priority, self.payload,
                self.due, e.received_at, self.source, self.twin)


class _Batch:
    """The keys, new rows and merges of one writer job."""

    def __init__(self, conn: sqlite3.Connection, named: dict[tuple[str, str], _Named]) -> None:
        self.conn = conn
        self.named = named
        self.rows: dict[int, _Row] = {}
        self.keys: list[tuple[str, str, float, _Named]] = []  # written with their owner as it ends
        self.next_id = _last_id(conn) + 1

    def add(self, event: NewEvent, now: float) -> Enqueued:
        found = [(k, self.named[(event.space, k)]) for k in event.dedup_keys
                 if (event.space, k) in self.named]
        for _, earlier in found:
            if earlier.source == event.source.value:
                return Enqueued(Outcome.DUPLICATE, earlier.key)
        twins = [earlier for key, earlier in found if key in event.twin_keys]
        if twins and self._can_take_twin(twins[0], now):
            met = Enqueued(Outcome.MERGED, twins[0].key)  # before the merge renames it
            self._merge(event, twins[0], now)
            return met
        other = next(iter(twins or [earlier for _, earlier in found]), None)
        if other is not None and event.source is not Source.API:
            return Enqueued(Outcome.DUPLICATE, other.key)  # the API's event wins
        row = _Row(self.next_id, event, event.due_at or now, event.source.value,
                   event.idempotency_key, event.payload, event.priority)
        self.next_id += 1
        self.rows[row.id] = row
        self._name(event, _Named(row.id, row.source, row.key))
        return QUEUED if other is None else Enqueued(Outcome.QUEUED, other.key)

    def _can_take_twin(self, earlier: _Named, now: float) -> bool:
        """Queued, not in flight, no twin yet (an API event that met its browser twin is
        API-sourced, so it is never met as a browser event again)."""
        if earlier.event_id is None:
            return False
        row = self.rows.get(earlier.event_id)
        if row is not None:
            return row.twin is None
        stored = self.conn.execute(STORED, (earlier.event_id,)).fetchone()
        if stored is None:
            return False
        status, lease_until, _, has_twin = stored
        return status == "queued" and (lease_until is None or lease_until <= now) and not has_twin

    def _merge(self, event: NewEvent, earlier: _Named, now: float) -> None:
        """One event of two: the API's side is kept, the browser's payload is its twin; due
        now, unless it was attempted already (a retry keeps its backoff)."""
        assert earlier.event_id is not None  # _can_take_twin said so
        event_id = earlier.event_id
        row = self.rows.get(event_id)
        if event.source is Source.API:
            priority = _api_priority(event.priority)
            if row is not None:
                row.twin, row.payload, row.key = row.payload, event.payload, event.idempotency_key
                row.source, row.priority, row.due = "api", priority, min(row.due, now)
            else:
                self.conn.execute(TAKE_OVER, (event.payload, event.idempotency_key, priority,
                                              self._due_now(event_id, now), event_id))
                self.conn.execute("UPDATE dedup SET source = 'api' WHERE event_id = ?", (event_id,))
            for named in self.named.values():
                if named.event_id == event_id:
                    named.source, named.key = "api", event.idempotency_key
        elif row is not None:
            row.twin, row.due = event.payload, min(row.due, now)
        else:
            self.conn.execute(ADD_TWIN, (event.payload, self._due_now(event_id, now), event_id))
        self._name(event, earlier)

    def _due_now(self, event_id: int, now: float) -> float:
        """`now` for an event that was never attempted; else a time that changes nothing."""
        (attempts,) = self.conn.execute(
            "SELECT attempts FROM outbox WHERE id = ?", (event_id,)
        ).fetchone()
        return now if attempts == 0 else float("inf")

    def _name(self, event: NewEvent, owner: _Named) -> None:
        """Every key of `event` names `owner` from now on."""
        for key in event.dedup_keys:
            self.named[(event.space, key)] = owner
            self.keys.append((event.space, key, event.dedup_until, owner))

    def write(self) -> None:
        keys = [(space, key, until, owner.event_id, owner.source)
                for space, key, until, owner in self.keys]
        _insert(self.conn, INSERT_EVENT, EVENT_VALUES, "", [r.values() for r in self.rows.values()])
        _insert(self.conn, INSERT_KEY, KEY_VALUES, ON_KEY_CONFLICT, keys)
        counts = Counter(row.event.space for row in self.rows.values())
        self.conn.executemany(COUNT_QUEUED, counts.items())


def _insert(
    conn: sqlite3.Connection, head: str, row: str, tail: str, rows: Sequence[tuple[object, ...]]
) -> None:
    """`head` VALUES `row`, `row`, ... `tail`: the rows in multi-row INSERTs, in order."""
    for chunk in _chunks(rows, ROWS_PER_INSERT):
        values = [value for one in chunk for value in one]
        conn.execute(_statement(head, row, tail, len(chunk)), values)


@functools.lru_cache(maxsize=256)
def _statement(head: str, row: str, tail: str, n: int) -> str:
    return head + ", ".join([row] * n) + tail


def enqueue(conn: sqlite3.Connection, pending: Enqueues) -> list[list[Enqueued]]:
    """Dedup, merge and insert the events of several enqueue calls; one list per call."""
    batch = _Batch(conn, _live_keys(conn, pending))
    answers = [[batch.add(event, now) for event in events] for (events, now), _ in pending]
    batch.write()
    return answers


def _api_priority(priority: int) -> int:
    """An event's priority once its API twin has taken it over."""
    return PRIORITY_PAGE_VIEW if priority == PRIORITY_PAGE_VIEW else PRIORITY_API_CONVERSION


def _last_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return int(row[0]) if row is not None else 0


def _live_keys(conn: sqlite3.Connection, pending: Enqueues) -> dict[tuple[str, str], _Named]:
    """The batch's dedup keys that are stored and unexpired at the batch's earliest `now`,
    with the event each names (its id None when the event was pruned since)."""
    wanted: dict[str, set[str]] = {}
    for (events, _), _ in pending:
        for event in events:
            if event.dedup_keys:
                wanted.setdefault(event.space, set()).update(event.dedup_keys)
    if not wanted:
        return {}
    now = min(now for (_, now), _ in pending)
    live: dict[tuple[str, str], _Named] = {}
    for space, space_keys in wanted.items():
        for chunk in _chunks(list(space_keys), KEYS_PER_QUERY):
            marks = ", ".join("?" * len(chunk))
            for key, event_id, source, idem in conn.execute(
                "SELECT d.key, d.event_id, d.source, o.idempotency_key FROM dedup d"
                " LEFT JOIN outbox o ON o.id = d.event_id"
                f" WHERE d.space = ? AND d.key IN ({marks}) AND d.expires_at > ?",
                (space, *chunk, now),
            ):
                event_id = event_id if idem is not None else None
                live[(space, key)] = _Named(event_id, source, idem or key.split(":", 2)[-1])
    return live


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
