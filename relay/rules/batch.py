"""The browser's request body: a batch of events, each checked on its own later."""

from __future__ import annotations

from relay.errors import Invalid, PayloadTooLarge
from relay.rules.body import parse_json


def parse_batch(raw: bytes, max_events: int) -> list[object]:
    """The events of a browser body `{"e": [event, ...]}`; raises `Invalid` (422) for any
    other shape and `PayloadTooLarge` (413) for more than `max_events` events.

    Other keys beside `e` are ignored, so a later snippet may send more. The events themselves
    are not checked here: each is checked on its own by `browser_event`.
    """
    data = parse_json(raw)
    events = data.get("e") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise Invalid(
            'The body must be a JSON object {"e": [event, ...]} holding a list of events.',
            errors={"e": ["is required: a list of event objects."]},
        )
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"The batch holds {len(events)} events; this relay takes at most {max_events} "
            "per request: send smaller batches."
        )
    return events
