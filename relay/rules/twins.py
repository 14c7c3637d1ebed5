"""Twins: an API event and its browser twin, delivered as one event.

A shop's backend knows the money (amount, order, the customer's email); the browser knows the
visit (visitor token, fingerprint with the client's address, user agent, page, campaign). When
the two meet in the outbox (same event name, and the same key or order id), the relay sends
one event: the API's fields win, and the browser's fill only the fields below that the API
left out. Nothing else of the browser's is taken: never an amount, an order, a time or a key.
"""

from __future__ import annotations

import json

from relay.rules.fields import COMET_FIELDS

# What a browser event may add to its API twin: the visit and the person.
FILLED_BY_BROWSER: tuple[str, ...] = (
    "comet_token",
    "user_agent",
    "url",
    *COMET_FIELDS,
    "email",
    "phone",
    "full_name",
    "first_name",
    "last_name",
)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def merge(api: dict[str, object], browser: dict[str, object]) -> dict[str, object]:
    """The one event of two twins: `api`, with the gaps in `FILLED_BY_BROWSER` filled from
    `browser`. `fingerprint` and `ip` go together (the contract refuses one alone): the
    browser's pair is taken only when the API event has neither."""
    merged = dict(api)
    for name in FILLED_BY_BROWSER:
        if name not in merged and name in browser:
            merged[name] = browser[name]
    pair = ("fingerprint", "ip")
    if not any(n in merged for n in pair) and all(n in browser for n in pair):
        merged.update((n, browser[n]) for n in pair)
    return merged


def merged_payload(api: bytes, browser: bytes | None) -> bytes:
    """The body to send for an event kept as its API payload and, if it met one, its browser
    twin's payload."""
    if browser is None:
        return api
    return _encode(merge(json.loads(api), json.loads(browser))).encode()
