"""An accepted event as the outbox keeps it: its source, dedup keys, key, priority and hold.

Trust (docs/CONTRACT.md, docs/SECURITY.md): an event from the Create Event API (a secret key)
outranks one from a browser (a public site key anyone can copy). So each stored event knows
its `Source`, conversions are delivered in three priorities (API conversions, then browser
conversions, then page views), and a conversion is held for the Space's twin window so that
its twin from the other source can meet it and merge (`relay.rules.twins`).

Dedup identity is per event name, as Meta's is (event name + event id): an event is a
duplicate of an earlier one with the same `event_name` and the same `idempotency_key`, or the
same `event_name` and `order_id`, inside the Space's dedup window. A page view that carries a
key cannot make a purchase with that key a duplicate.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec

from relay.rules.fields import PAGE_VIEW_EVENT

if TYPE_CHECKING:
    from relay.settings import Space


class Source(StrEnum):
    """Where an event came from: a server with a secret API key, or a browser with the public
    site key (which anyone can copy)."""

    API = "api"
    BROWSER = "browser"


class TwinMatch(StrEnum):
    """Which dedup keys may pair an API event with its browser twin (a Space's `twin_match`).

    A match by order lets whoever guesses an order number inside the twin window attach a
    browser's context (campaign, visitor) to that real purchase; a Space that cannot accept
    that risk matches by key only, or never merges."""

    KEY_AND_ORDER = "key_and_order"
    KEY = "key"
    OFF = "off"


_MATCHES = {match.value: match for match in TwinMatch}  # TwinMatch(value), without its cost

PRIORITY_API_CONVERSION = 0
PRIORITY_BROWSER_CONVERSION = 1
PRIORITY_PAGE_VIEW = 2
PRIORITIES = (PRIORITY_API_CONVERSION, PRIORITY_BROWSER_CONVERSION, PRIORITY_PAGE_VIEW)

_encode_std = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once
_encode_fast = msgspec.json.Encoder().encode


def encode_payload(event: dict[str, object]) -> bytes:
    """The event as the compact UTF-8 JSON sent upstream, byte for byte what
    `json.dumps(event, ensure_ascii=False, separators=(",", ":"))` gives.

    msgspec writes it (a fraction of the cost) unless a float would be written with an
    exponent, where the two differ ("1e+16" against "1e16"): those take the standard library.
    An event is flat (the contract has no nested fields), so one look at its values does.
    """
    for value in event.values():
        if type(value) is float and value and not 1e-4 <= abs(value) < 1e16:
            return _encode_std(event).encode()
    return _encode_fast(event)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 8 times as much, per event
class NewEvent:
    """An accepted event, ready to be made durable.

    `due_at` is when it may first be delivered (None: at once); `twin_keys` are those of its
    `dedup_keys` through which it may meet and merge with an event of the other source.
    """

    space: str
    event_name: str
    idempotency_key: str
    payload: bytes  # the JSON body to send upstream, exactly
    dedup_keys: tuple[str, ...]  # e.g. ("idem:purchase:abc", "order:purchase:1001"); may be empty
    dedup_until: float  # Unix time at which the dedup keys expire
    received_at: float
    priority: int = PRIORITY_API_CONVERSION
    source: Source = Source.API
    due_at: float | None = None
    twin_keys: tuple[str, ...] = ()


def dedup_keys(event: dict[str, object]) -> tuple[str, ...]:
    """The keys that make a later event with the same name a duplicate of this one: its
    idempotency key first, then its order id."""
    name = event["event_name"]
    keys = []
    if "idempotency_key" in event:
        keys.append(f"idem:{name}:{event['idempotency_key']}")
    if "order_id" in event:
        keys.append(f"order:{name}:{event['order_id']}")
    return tuple(keys)


def twin_keys(keys: tuple[str, ...], match: TwinMatch) -> tuple[str, ...]:
    """Those of `keys` through which an event may meet its twin, by the Space's `match`."""
    if match is TwinMatch.OFF:
        return ()
    if match is TwinMatch.KEY:
        return tuple(k for k in keys if k.startswith("idem:"))
    return keys


def is_conversion(event_name: str) -> bool:
    """Every event but a page view is a conversion: held for its twin, delivered first."""
    return event_name != PAGE_VIEW_EVENT


def priority(event_name: str, source: Source = Source.API) -> int:
    """API conversions first, then browser conversions, then page views."""
    if not is_conversion(event_name):
        return PRIORITY_PAGE_VIEW
    return PRIORITY_API_CONVERSION if source is Source.API else PRIORITY_BROWSER_CONVERSION


def new_event(
    space: Space, event: dict[str, object], now: float, source: Source = Source.API
) -> NewEvent:
    """Turn a checked event into an outbox entry, assigning an idempotency key if it has none.

    The dedup keys are computed before a key is assigned: an assigned key is unique anyway. A
    conversion is held for the Space's `twin_window_seconds`; a page view never is.
    """
    keys = dedup_keys(event)
    if "idempotency_key" not in event:
        event["idempotency_key"] = str(uuid.uuid4())
    name = str(event["event_name"])
    hold = space.twin_window_seconds if is_conversion(name) else 0.0
    return NewEvent(
        space=space.id,
        event_name=name,
        idempotency_key=str(event["idempotency_key"]),
        payload=encode_payload(event),
        dedup_keys=keys,
        dedup_until=now + space.dedup_window_hours * 3600.0,
        received_at=now,
        priority=priority(name, source),
        source=source,
        due_at=now + hold if hold > 0 else None,
        twin_keys=twin_keys(keys, _MATCHES.get(space.twin_match) or TwinMatch(space.twin_match)),
    )
