"""What the relay adds to a browser event (docs/CONTRACT.md), as pure functions.

The browser may not set `ip`, `user_agent`, `comet_token` or `idempotency_key`: whatever it
sends for them is dropped without a word (the snippet never sends them, so only a forger
would, and refusing the event would only lose it). The relay sets them from the request:
`ip` only together with a `fingerprint`, since the API refuses one without the other (with
no usable client address the fingerprint is dropped instead);
`idempotency_key` from the event's `event_id`, so the browser pixel and the relay share it.

An optional user field (`OPTIONAL_USER_FIELDS`) whose value is wrong, say an empty email
from a form submitted with the field left blank, is dropped rather than refusing the event
(`drop_bad_user_fields`): the snippet attaches the visit's identity to every event, so one
bad value would otherwise refuse every later event of the visit. The answer lists what was
dropped. The API, whose sender can fix and resend, is still refused whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from relay import rules
from relay.enrich.client import MAX_USER_AGENT, Client, client_address
from relay.rules.fields import COMET_FIELDS

RELAY_ONLY: frozenset[str] = frozenset({"ip", "user_agent", "comet_token", "idempotency_key"})
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
MAX_CLOCK_SKEW_SECONDS = 300
MAX_LISTED = 5  # fields whose problems the answer lists, per refused event

# What comet('identify', ...) and form capture attach to the visit's events.
OPTIONAL_USER_FIELDS: tuple[str, ...] = ("email", "phone", "first_name", "last_name", "full_name")

UTM_PARAMS: Mapping[str, str] = {
    "utm_source": "comet_source",
    "utm_medium": "comet_type",
    "utm_campaign": "comet_campaign",
    "utm_term": "comet_keyword",
    "utm_content": "comet_ad_id",
}

def attribution_from_url(url: str) -> dict[str, str]:
    """The comet_* attribution fields that the query of `url` carries (docs/CONTRACT.md §3).

    An explicit `comet_*` parameter wins over the UTM parameter mapped to the same field; of a
    parameter given twice, the first counts; empty values are ignored.
    """
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. a malformed IPv6 host
        return {}
    params: dict[str, str] = {}
    for name, value in parse_qsl(query):
        if value and name not in params:
            params[name] = value
    found = {field: params[utm] for utm, field in UTM_PARAMS.items() if utm in params}
    found.update({name: params[name] for name in COMET_FIELDS if name in params})
    return found


def event_time(sent: object, now: float) -> float:
    """The event's time: `sent` when it is Unix seconds of the last 7 days (5 minutes of clock
    skew allowed), else `now` in whole seconds."""
    if not isinstance(sent, int | float) or isinstance(sent, bool) or not math.isfinite(sent):
        return int(now)
    if now - MAX_EVENT_AGE_SECONDS <= sent <= now + MAX_CLOCK_SKEW_SECONDS:
        return sent
    return int(now)


def browser_event(
    sent: object, client: Client, custom_events: frozenset[str], now: float
) -> tuple[dict[str, object], dict[str, list[str]]]:
    """One event of a browser batch, enriched and checked: (the event, every problem).

    The event is ready for the outbox when the problems are empty. Problems are keyed by the
    field the browser sent, so a bad `event_id` is reported as `event_id`.
    """
    if not isinstance(sent, dict):
        return {}, {"event": ["must be a JSON object holding one event."]}
    event = {
        name: value
        for name, value in sent.items()
        if name not in RELAY_ONLY and name not in ("event_id", "event_time")
    }
    if sent.get("event_id") is not None:
        event["idempotency_key"] = sent["event_id"]
    url = event.get("url")
    if isinstance(url, str):
        for name, value in attribution_from_url(url).items():
            if event.get(name) is None:
                event[name] = value
    if event.get("fingerprint") is not None:
        ip = client_address(client.ip)
        if ip:
            event["ip"] = ip
        else:  # the API takes a fingerprint only with an ip; the comet_token identifies anyway
            del event["fingerprint"]
    if client.user_agent:
        event["user_agent"] = client.user_agent[:MAX_USER_AGENT]
    event["comet_token"] = client.comet_token
    event["event_time"] = event_time(sent.get("event_time"), now)
    # The snippet sends no unknown fields: a batch of 50 forged events gets few hints, and
    # few problems each, so that the answer stays small.
    checked, errors = rules.validate(event, custom_events, hints=1, listed=MAX_LISTED)
    if "idempotency_key" in errors:
        errors["event_id"] = errors.pop("idempotency_key")
    return checked, errors


def drop_bad_user_fields(
    event: dict[str, object], errors: dict[str, list[str]], custom_events: frozenset[str]
) -> tuple[dict[str, object], dict[str, list[str]], dict[str, list[str]]]:
    """A checked browser event whose only problems are in optional user fields, without them:
    (the event, its remaining problems, the problems of the fields dropped).

    An event with any other problem is left as it is (refused, every problem listed). The
    event is checked again without the dropped fields (it is still identified: a browser
    event always carries its `comet_token`).
    """
    bad = {name: messages for name, messages in errors.items() if name in OPTIONAL_USER_FIELDS}
    if not bad or len(bad) != len(errors):
        return event, errors, {}
    kept = {name: value for name, value in event.items() if name not in bad}
    checked, remaining = rules.validate(kept, custom_events, hints=1)
    return checked, remaining, bad
