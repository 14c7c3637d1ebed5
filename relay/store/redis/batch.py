"""Events as the scripts take them and their answers: the enqueue script's packed batch
(lua/enqueue.lua reads it back with struct.unpack) and the import script's ARGV
(lua/import.lua)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

from relay.errors import Unavailable
from relay.redis_link import number as _arg
from relay.store.base import Enqueued, NewEvent, Outcome, Source
from relay.store.redis.scripts import text

EVENT_HEAD = struct.Struct("<ddddBBH")  # an enqueued event's numbers; see lua/enqueue.lua
LENGTH = struct.Struct("<I")
SOURCES = {Source.API: 0, Source.BROWSER: 1}
OUTCOMES = {"q": Outcome.QUEUED, "d": Outcome.DUPLICATE, "m": Outcome.MERGED}


class Batch:
    """The enqueue script's packed events per Space, for the calls of one tick."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}

    def add(self, e: NewEvent, now: float) -> tuple[str, int]:
        """Pack `e` for its Space's script; where its answer will be: (Space, position)."""
        due = now if e.due_at is None else e.due_at
        parts = self.parts.setdefault(e.space, [])
        parts.append(EVENT_HEAD.pack(
            now, e.received_at, e.dedup_until, due, e.priority, SOURCES[e.source],
            len(e.dedup_keys),
        ))  # fmt: skip
        for string in (e.event_name.encode(), e.idempotency_key.encode(), e.payload):
            parts += (LENGTH.pack(len(string)), string)
        for key in e.dedup_keys:
            raw = key.encode()
            parts += (b"\1" if key in e.twin_keys else b"\0", LENGTH.pack(len(raw)), raw)
        position = self.counts.get(e.space, 0)
        self.counts[e.space] = position + 1
        return e.space, position

    def args(self, space: str) -> list[bytes]:
        """The enqueue script's ARGV for `space`."""
        return [b"".join(self.parts[space])]


def answer(
    future: asyncio.Future[list[Enqueued]],
    by_space: dict[str, Any],
    places: list[tuple[str, int]],
) -> None:
    """Answer one enqueue call from the Spaces' script answers (`places`: where its events'
    answers are), or with Unavailable if one of those scripts failed."""
    failed = next((r for s, _ in places if isinstance(r := by_space[s], Exception)), None)
    if failed is not None:
        future.set_exception(Unavailable(f"Redis refused the enqueue: {failed}"))
    else:
        future.set_result([_enqueued(by_space[space], i) for space, i in places])


def _enqueued(flat: list[Any], i: int) -> Enqueued:
    """The `i`th event's answer in an enqueue script's answer: two items per event."""
    outcome, other = flat[2 * i], flat[2 * i + 1]
    return Enqueued(OUTCOMES[text(outcome)], None if other is None else text(other))


@dataclass(frozen=True)
class ImportedEvent:
    """A queued or dead event as another backend held it, for `RedisOutbox.import_events`.

    `mark` names it uniquely in its source (for example the source's id and its key). `keys`
    are the dedup keys that name it, with their expiries; `twin` is the payload of the browser
    twin it met, if any.
    """

    mark: str
    dead: bool
    priority: int
    event_name: str
    idempotency_key: str
    payload: bytes
    received_at: float
    next_attempt_at: float
    attempts: int
    last_status: int | None
    last_message: str
    died_at: float | None
    source: Source = Source.API
    twin: bytes | None = None
    keys: tuple[tuple[str, float], ...] = ()

    def args(self) -> list[Any]:
        """The event's entries of the import script's ARGV (lua/import.lua): FIELDS, then
        its keys."""
        head = [
            self.mark, "d" if self.dead else "q", self.priority, self.event_name,
            self.idempotency_key, self.payload, _arg(self.received_at),
            _arg(self.next_attempt_at), self.attempts, _arg(self.last_status),
            self.last_message, _arg(self.died_at), self.source.value,
            b"" if self.twin is None else self.twin, len(self.keys),
        ]  # fmt: skip
        return head + [x for key, until in self.keys for x in (key, _arg(until))]


@dataclass(frozen=True)
class ImportedKey:
    """A live dedup key whose event is not imported (delivered, or gone), for
    `RedisOutbox.import_events`: its expiry and what it named (that event's source and
    idempotency key)."""

    key: str
    until: float
    source: Source
    idempotency_key: str

    def args(self) -> list[Any]:
        """The key's four entries of the import script's ARGV (lua/import.lua)."""
        return [self.key, _arg(self.until), self.source.value, self.idempotency_key]

