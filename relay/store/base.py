"""The Outbox interface every storage backend implements.

An outbox holds accepted events until they are delivered upstream. Dedup happens in the same
transaction as the enqueue, so two requests with one key can never both be queued.
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


@dataclass
class OutboxStats:
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

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[bool]:
        """Make `events` durable; for each, True if queued, False if it was a duplicate.

        Returns only after the commit is on disk. Dedup keys that are still live (expire
        after `now`) make the event a duplicate, including keys of earlier events in the
        same call.
        """
        ...

    async def stats(self) -> OutboxStats: ...
