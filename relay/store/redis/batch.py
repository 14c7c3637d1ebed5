"""Events as the scripts take them: the enqueue script's packed batch (lua/enqueue.lua reads it
back with struct.unpack) and the import script's ARGV (lua/import.lua)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

from relay.errors import Unavailable
from relay.redis_link import number as _arg
from relay.store.base import NewEvent

EVENT_HEAD = struct.Struct("<dddBH")  # an enqueued event's numbers; see lua/enqueue.lua
LENGTH = struct.Struct("<I")


class Batch:
    """The enqueue script's packed events per Space, for the calls of one tick."""

    def __init__(self) -> None:
        self.parts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}

    def add(self, e: NewEvent, now: float) -> tuple[str, int]:
        """Pack `e` for its Space's script; where its answer will be: (Space, position)."""
        strings = [e.event_name.encode(), e.idempotency_key.encode(), e.payload]
        strings += [key.encode() for key in e.dedup_keys]
        parts = self.parts.setdefault(e.space, [])
        parts.append(
            EVENT_HEAD.pack(now, e.received_at, e.dedup_until, e.priority, len(e.dedup_keys))
        )
        for string in strings:
            parts += (LENGTH.pack(len(string)), string)
        position = self.counts.get(e.space, 0)
        self.counts[e.space] = position + 1
        return e.space, position

    def args(self, space: str) -> list[bytes]:
        """The enqueue script's ARGV for `space`."""
        return [b"".join(self.parts[space])]


def answer(
    future: asyncio.Future[list[bool]], by_space: dict[str, Any], places: list[tuple[str, int]]
) -> None:
    """Answer one enqueue call from the Spaces' script answers (`places`: where its events'
    answers are), or with Unavailable if one of those scripts failed."""
    failed = next((r for s, _ in places if isinstance(r := by_space[s], Exception)), None)
    if failed is not None:
        future.set_exception(Unavailable(f"Redis refused the enqueue: {failed}"))
    else:
        future.set_result([by_space[space][i] == ord("1") for space, i in places])


@dataclass(frozen=True)
class ImportedEvent:
    """A queued or dead event as another backend held it, for `RedisOutbox.import_events`.

    `mark` names it uniquely in its source (for example the source's id and its key).
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

    def args(self) -> list[Any]:
        """The event's FIELDS entries of the import script's ARGV (lua/import.lua)."""
        return [
            self.mark, "d" if self.dead else "q", self.priority, self.event_name,
            self.idempotency_key, self.payload, _arg(self.received_at),
            _arg(self.next_attempt_at), self.attempts, _arg(self.last_status),
            self.last_message, _arg(self.died_at),
        ]  # fmt: skip

