"""'Did you mean ...?': what a sender likely meant by an unknown field or event name.

Other trackers' names (`value`, `revenue`), UTM parameters, Meta pixel event names and
spelling slips are matched to the API's own names, so a 422 says what to send instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType

from relay.rules.fields import FIELDS, PROFILE_FIELD_COUNT, STANDARD_EVENTS
from relay.rules.messages import clip

_PROFILE_FIELD = re.compile(r"profile_field_?([0-9]+)")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_FIELD_NAMES = tuple(FIELDS)
_STANDARD_NAMES = tuple(sorted(STANDARD_EVENTS))

# Names people send for a field of this API: other trackers' names, UTM parameters, habits.
_FIELD_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "value": ("amount",),
        "revenue": ("amount",),
        "price": ("amount",),
        "total": ("amount",),
        "event": ("event_name",),
        "event_type": ("event_name",),
        "name": ("event_name", "full_name"),
        "timestamp": ("event_time",),
        "time": ("event_time",),
        "event_timestamp": ("event_time",),
        "created_at": ("event_time",),
        "order": ("order_id",),
        "order_number": ("order_id",),
        "transaction_id": ("order_id",),
        "event_id": ("idempotency_key",),
        "dedup_key": ("idempotency_key",),
        "user_email": ("email",),
        "email_address": ("email",),
        "ip_address": ("ip",),
        "client_ip": ("ip",),
        "useragent": ("user_agent",),
        "ua": ("user_agent",),
        "page_url": ("url",),
        "href": ("url",),
        "phone_number": ("phone",),
        "firstname": ("first_name",),
        "lastname": ("last_name",),
        "fullname": ("full_name",),
        "token": ("comet_token",),
        "upsell": ("is_upsell",),
        "utm_source": ("comet_source",),
        "utm_medium": ("comet_type",),
        "utm_campaign": ("comet_campaign",),
        "utm_term": ("comet_keyword",),
        "utm_content": ("comet_ad_id",),
    }
)

# Meta pixel names and habits for the standard events (docs/CONTRACT.md §4).
_EVENT_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "lead": ("lead_generated",),
        "page_view": ("view_content",),
        "pageview": ("view_content",),
        "signup": ("sign_up",),
        "order": ("purchase",),
    }
)


def event_hint(name: str) -> str:
    """'did you mean ...? ' (with its space) for an unknown event name, or ''."""
    return _did_you_mean(name, _EVENT_ALIASES, _STANDARD_NAMES)


def unknown_field(name: str, suggest: bool = True) -> str:
    """The message for a field the API does not have; with a guess when `suggest`."""
    shown = clip(name)
    number = _PROFILE_FIELD.fullmatch(name)
    if number is not None and not _is_profile_number(number[1]):
        return (
            f"'{shown}' is not a field: profile fields are profile_field_1 to "
            f"profile_field_{PROFILE_FIELD_COUNT} (1-15 text, 16-25 numbers, 26-30 dates)."
        )
    hint = _did_you_mean(name, _FIELD_ALIASES, _FIELD_NAMES) if suggest else ""
    if hint:
        return f"'{shown}' is not a field of the Create Event API: {hint.strip()}"
    return (
        f"'{shown}' is not a field of the Create Event API: remove it, or send what it says "
        f"about the person in one of profile_field_1 to profile_field_{PROFILE_FIELD_COUNT}."
    )


def _is_profile_number(digits: str) -> bool:
    """Whether ASCII `digits` number a profile field; never int() thousands of digits."""
    digits = digits.lstrip("0")
    return len(digits) <= 2 and digits != "" and 1 <= int(digits) <= PROFILE_FIELD_COUNT


def _did_you_mean(name: str, aliases: Mapping[str, tuple[str, ...]], known: tuple[str, ...]) -> str:
    """'did you mean ...? ' (with its space) naming what the sender likely meant, or ''."""
    if len(name) > 64:
        return ""
    plain = _CAMEL_HUMP.sub("_", name).lower().replace("-", "_").replace(" ", "_")
    if plain in known:
        guesses: tuple[str, ...] | list[str] = (plain,)
    elif plain in aliases:
        guesses = aliases[plain]
    else:
        guesses = difflib.get_close_matches(plain, known, n=1, cutoff=0.75)
    if not guesses:
        return ""
    return "did you mean " + " or ".join(f"'{guess}'" for guess in guesses) + "? "

