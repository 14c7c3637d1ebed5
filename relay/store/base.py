"""The Outbox interface every storage backend implements.

An outbox holds accepted events until they are delivered upstream. Dedup happens in the same
transaction as the enqueue, so two requests with one key can never both be queued.

Every method may raise `relay.errors.Unavailable` when the storage cannot be reached or cannot
write; nothing is acknowledged then. All times are Unix seconds passed in by the caller, so
tests control the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

PRIORITY_CONVERSION = 0
PRIORITY_PAGE_VIEW = 1


@dataclass(frozen=True)
class NewEvent:
    """An accepted event, ready to be made durable."""

    space: str
    event_name: str
    idempotency_key: str
    payload: bytes  # the JSON body to send upstream, exactly
    dedup_keys: tuple[str, ...]  # e.g. ("idem:abc", "order:purchase:1001"); may be empty
    dedup_until: float  # Unix time at which the dedup keys expire
    received_at: float
    priority: int = PRIORITY_CONVERSION


@dataclass(frozen=True)
class Claimed:
    """An event leased to one forwarder until `lease_until`."""

    id: int
    space: str
    event_name: str
    idempotency_key: str
    payload: bytes
    attempts: int
    received_at: float
    lease_until: float


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


class Outbox(Protocol):
    """Durable queue of accepted events (see DESIGN.md, 'Interfaces that must stay small')."""

    async def start(self) -> None:
        """Connect, create what storage is missing; idempotent. Call before anything else."""
        ...

    async def close(self) -> None:
        """Finish the writes already submitted, then disconnect, within a bounded time."""
        ...

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[bool]:
        """Make `events` durable; for each, True if queued, False if it was a duplicate.

        Returns only after the commit is on disk. Dedup keys that are still live (expire
        after `now`) make the event a duplicate, including keys of earlier events in the
        same call. A queued event is due at once (`next_attempt_at = now`).
        """
        ...

    async def claim(self, space: str, n: int, lease_seconds: float, now: float) -> list[Claimed]:
        """Lease up to `n` due events of `space`: conversions first, then oldest first.

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
