"""An accepted event as the outbox keeps it: its dedup keys, its key, its priority.

Dedup identity follows the contract: an event is a duplicate of an earlier one with the same
`idempotency_key`, or with the same `event_name` and `order_id`, inside the Space's dedup
window (docs/CONTRACT.md).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relay.rules.fields import PAGE_VIEW_EVENT

if TYPE_CHECKING:
    from relay.settings import Space

PRIORITY_CONVERSION = 0
PRIORITY_PAGE_VIEW = 1

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once


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


def dedup_keys(event: dict[str, object]) -> tuple[str, ...]:
    """The keys that make a later event a duplicate of this one."""
    keys = []
    if "idempotency_key" in event:
        keys.append(f"idem:{event['idempotency_key']}")
    if "order_id" in event:
        keys.append(f"order:{event['event_name']}:{event['order_id']}")
    return tuple(keys)


def priority(event_name: str) -> int:
    """Conversions are delivered before page views."""
    return PRIORITY_PAGE_VIEW if event_name == PAGE_VIEW_EVENT else PRIORITY_CONVERSION


def new_event(space: Space, event: dict[str, object], now: float) -> NewEvent:
    """Turn a checked event into an outbox entry, assigning an idempotency key if it has none.

    The dedup keys are computed before a key is assigned: an assigned key is unique anyway.
    """
    keys = dedup_keys(event)
    if "idempotency_key" not in event:
        event["idempotency_key"] = str(uuid.uuid4())
    name = str(event["event_name"])
    return NewEvent(
        space=space.id,
        event_name=name,
        idempotency_key=str(event["idempotency_key"]),
        payload=_encode(event).encode(),
        dedup_keys=keys,
        dedup_until=now + space.dedup_window_hours * 3600.0,
        received_at=now,
        priority=priority(name),
    )
