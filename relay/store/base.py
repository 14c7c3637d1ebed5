"""The Outbox interface every storage backend implements.

An outbox holds accepted events until they are delivered upstream. Dedup happens in the same
transaction as the enqueue, so two requests with one key can never both be queued.

Every method may raise `relay.errors.Unavailable` when the storage cannot be reached or cannot
write; nothing is acknowledged then. All times are Unix seconds passed in by the caller, so
tests control the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from relay.lifecycle import Lifecycle, Runs
from relay.rules.events import NewEvent, Source
from relay.rules.twins import merged_payload
from relay.tick import Pending, TickBatch

__all__ = ["NewEvent", "Source"]  # defined by the rules, taken by every backend

class Outcome(StrEnum):
    """What `Outbox.enqueue` made of one event."""

    QUEUED = "queued"  # stored as a new event
    DUPLICATE = "duplicate"  # dropped: an earlier event stands for it
    MERGED = "merged"  # met its twin from the other source: the two are now one event


@dataclass(frozen=True)
class Enqueued:
    """The `Outcome` of one event, and the idempotency key of the other event in a merge or
    the earlier event of a duplicate (None for a new event)."""

    outcome: Outcome
    other: str | None = None

    @property
    def queued(self) -> bool:
        return self.outcome is Outcome.QUEUED


QUEUED = Enqueued(Outcome.QUEUED)

Enqueues = Pending[tuple[Sequence[NewEvent], float], list[Enqueued]]
"""The enqueue calls of one event-loop tick, which a backend writes together: each is
((events, now), the future of its answer); see `relay.tick.TickBatch`."""


class TickBatchedOutbox(Lifecycle):
    """The enqueue both backends share: the calls made in one event-loop tick go to the
    backend's `_flush` together (one writer job, one pipeline), each waiting for its answer.

    A backend implements `_flush(pending)`, which must settle every future of `pending`, and
    `_check(events)`, which refuses what it cannot store before anything is queued.
    """

    def __init__(self) -> None:
        self._batch: TickBatch[tuple[Sequence[NewEvent], float], list[Enqueued]] = TickBatch(
            self._flush
        )

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Enqueued]:
        """See `Outbox.enqueue`."""
        self._check(events)
        return await self._batch.submit((events, now))

    def _check(self, events: Sequence[NewEvent]) -> None:
        """Raise before anything is queued for events the backend cannot store."""

    def _flush(self, pending: Enqueues) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Claimed:
    """An event leased to one forwarder until `lease_until`.

    `payload` is what was accepted (an API event's, when twins merged) and `twin` the browser
    twin's payload it met, if any; `body()` is what to send.
    """

    id: int
    space: str
    event_name: str
    idempotency_key: str
    payload: bytes
    attempts: int
    received_at: float
    lease_until: float
    source: Source = Source.API
    twin: bytes | None = None

    def body(self) -> bytes:
        """The JSON body to send upstream: the payload, with its twin's gaps filled in."""
        return merged_payload(self.payload, self.twin)


@dataclass(frozen=True)
class DeadEvent:
    """An event the upstream refused for good (or that grew too old to retry)."""

    id: int
    space: str
    event_name: str
    idempotency_key: str
    attempts: int
    last_status: int | None
    last_message: str
    received_at: float
    died_at: float


@dataclass
class OutboxStats:
    """Counts of events by state; `queued` includes the `retrying` ones (queued, attempts > 0).

    `spaces` maps each Space id to the same four counts.
    """

    queued: int = 0
    retrying: int = 0
    delivered: int = 0
    dead: int = 0
    spaces: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "queued": self.queued,
            "retrying": self.retrying,
            "delivered": self.delivered,
            "dead": self.dead,
            "spaces": self.spaces,
        }


@dataclass(frozen=True)
class Change:
    """One step in an event's life, as `ChangeFeed.changes` reports it.

    `state` is "accepted" (queued by enqueue), "retrying" (an attempt failed, it is due again),
    "delivered", "dead" or "replayed" (back from the dead letters). `attempts` is how many
    times the event was sent up to and including this step; `last_status` and `last_message`
    are the upstream's last refusal as it was then (none for "delivered"); `at` is the
    writer's `now` (for "accepted", the event's `received_at`).
    """

    at: float
    id: int
    space: str
    event_name: str
    idempotency_key: str
    state: str
    attempts: int = 0
    last_status: int | None = None
    last_message: str = ""


@dataclass(frozen=True)
class ChangePage:
    """Steps that followed a cursor (acceptances, then later steps; each kind in commit order)
    and the cursor to continue from."""

    changes: list[Change]
    cursor: str  # opaque; only meaningful to the outbox that made it


class Outbox(Runs, Protocol):
    """Durable queue of accepted events (see docs/DESIGN.md). Started and closed by
    `async with outbox:` (relay.lifecycle); every method needs it started."""

    async def start(self) -> None:
        """Connect, create what storage is missing; idempotent. Call before anything else."""
        ...

    async def close(self) -> None:
        """Finish the writes already submitted, then disconnect, within a bounded time."""
        ...

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Enqueued]:
        """Make `events` durable; for each, what became of it.

        Returns only after the commit is on disk. An event's dedup keys that are live (expire
        after `now`) and name an earlier event, including one earlier in the same call, decide:

        - none: QUEUED, due at its `due_at` (or `now`); its keys now name it.
        - an event of the same source: DUPLICATE.
        - an event of the other source, through one of its `twin_keys`, that is queued, not
          leased and has not met a twin yet: MERGED. The two become one event, kept as the
          API event (its key, payload and priority, source API) with the browser event's
          payload as its `twin`; it is due at once unless it was attempted already. The
          keys of both name it.
        - any other event of the other source: the API's event wins. An API event is QUEUED
          as a new event (its keys now name it); a browser event is a DUPLICATE.

        Where keys name several events, an event of the same source is found first, then a
        twin by the first of `twin_keys`. `other` is the idempotency key of the event met.
        """
        ...

    async def claim(self, space: str, n: int, lease_seconds: float, now: float) -> list[Claimed]:
        """Lease up to `n` due events of `space`: by priority (API conversions, browser
        conversions, page views), then oldest first. A held event is not due before its
        `due_at`.

        Due means queued, `next_attempt_at <= now`, and not leased (or the lease ran out:
        at-least-once). Each claimed event is leased until `now + lease_seconds`.
        """
        ...

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        """Mark events delivered at `now` (kept until pruned); ends their leases."""
        ...

    async def retry(self, id: int, at: float, status: int | None, message: str, now: float) -> None:
        """Count an attempt, end the lease, make the event due again at `at`.

        `status` and `message` (the upstream's last answer) are kept for the dead letters.
        """
        ...

    async def dead(self, id: int, status: int | None, message: str, now: float) -> None:
        """Count an attempt and move the event to the dead letters with the reason."""
        ...

    async def release(self, ids: Sequence[int]) -> None:
        """Give up leases without counting an attempt (bounded shutdown)."""
        ...

    async def next_due(self, space: str) -> float | None:
        """When the earliest queued event of `space` becomes due, or None if none is queued.

        A leased event counts as due when its lease runs out, so a forwarder that finds nothing
        to claim can sleep until this time (it may be in the past: claim again now).
        """
        ...

    async def dead_letters(self, limit: int = 1000) -> list[DeadEvent]:
        """Up to `limit` dead events, oldest first."""
        ...

    async def replay(self, ids: Sequence[int] | None, now: float) -> int:
        """Put dead events (all when `ids` is None) back in the queue; returns how many.

        They are due at `now`; attempts and the last upstream answer are kept. Ids that are
        not dead are ignored.
        """
        ...

    async def prune(self, delivered_before: float, now: float) -> int:
        """Delete delivered events older than `delivered_before` and expired dedup keys.

        Returns how many events were deleted (dedup keys are not counted). Works in small
        chunks, so the API is never held up for long.
        """
        ...

    async def stats(self) -> OutboxStats:
        """Current counts; cheap enough to call on every health check."""
        ...


@runtime_checkable
class ChangeFeed(Protocol):
    """An outbox that can report what happens to its events, as `outbox tail` shows it.

    Kept apart from `Outbox` so that a backend can be used before it can be followed;
    `isinstance(outbox, ChangeFeed)` tells.
    """

    async def changes(self, after: str | None, limit: int = 1000) -> ChangePage:
        """The steps events took after the cursor `after`, for followers such as `outbox tail`.

        `after=None` starts at the present: the page is empty and its cursor is where a
        follower begins. Otherwise the page holds up to `limit` acceptances and up to `limit`
        later steps, each exactly once across successive calls, and an event's acceptance
        never comes after its later steps. Steps committed by other processes are included.
        Steps of events pruned meanwhile are skipped; a backend keeps later steps for at
        least an hour, so a follower further behind than that misses some.
        """
        ...


@dataclass
class QueueFigures:
    """The queue by (Space id, priority), as `QueueAges.queue_figures` reports it.

    `depth`: how many events are queued (retrying and leased ones included), so the depths of
    a Space add up to its `OutboxStats` "queued" count. `oldest`: the `received_at` of the
    oldest queued event (the first accepted of those still queued). A (Space, priority) with
    nothing queued is absent from both.
    """

    depth: dict[tuple[str, int], int] = field(default_factory=dict)
    oldest: dict[tuple[str, int], float] = field(default_factory=dict)


@runtime_checkable
class QueueAges(Protocol):
    """An outbox that can tell, cheaply, how deep its queue is and how old its oldest queued
    event is, by Space and priority.

    Kept apart from `Outbox` (as `ChangeFeed` is); `isinstance(outbox, QueueAges)` tells.
    """

    async def queue_figures(self) -> QueueFigures:
        """Depth and oldest `received_at` per (Space id, priority), from one snapshot per
        Space; cheap enough for every metrics scrape."""
        ...


async def follow(
    outbox: ChangeFeed,
    interval: float = 1.0,
    *,
    after: str | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncIterator[Change]:
    """Every step from now on (or after the cursor `after`) as it happens, until cancelled.

    Polls `outbox.changes`; waits `interval` seconds between polls that find nothing new.
    """
    page = await outbox.changes(after)
    while True:
        for change in page.changes:
            yield change
        if not page.changes:
            await sleep(interval)
        page = await outbox.changes(page.cursor)
