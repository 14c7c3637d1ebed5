"""Checking one event against the Create Event API's rules, listing every problem.

`validate` returns the problems, `check` raises `Invalid` (422) with them. Decisions where
the contract is silent:
- `event_time` as a string must carry a time of day (a bare date is refused) and is read
  by `datetime.fromisoformat` (ISO 8601 in its common forms; `t`/`z` in either case);
- an empty `comet_token`, `fingerprint` or `idempotency_key` is refused: it identifies nothing;
- a string in `profile_field_16` … `_25` holds a decimal number: an optional sign, digits
  with an optional fraction, an optional exponent (`"500"`, `"-1.5"`, `".5"`, `"2e3"`), and
  nothing else (no spaces, no "inf" or "nan");
- no text may hold NUL: valid JSON (`\\u0000`), but no upstream keeps it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TypeGuard

from relay.errors import Invalid
from relay.rules import fields
from relay.rules.fields import (
    BODY,
    CUSTOM_EVENT_COUNT,
    CUSTOM_EVENTS,
    FIELDS,
    IDENTIFICATION_MESSAGE,
    STANDARD_EVENTS,
    Kind,
)
from relay.rules.hints import event_hint, unknown_field
from relay.rules.messages import clip, wrong_type

_KINDS = dict(FIELDS)  # a plain dict: looked up for every field of every event
MAX_LISTED = 50  # fields whose problems one answer lists
_EMAIL = re.compile(fields.EMAIL_PATTERN)
_URL = re.compile(fields.URL_PATTERN)
_NUMBER_TEXT = re.compile(fields.NUMBER_TEXT_PATTERN)
_HOLDS_NUL = "holds a NUL character (\\u0000), which no text may hold: remove it."
_STANDARD_LIST = ", ".join(sorted(STANDARD_EVENTS))
_EVENT_NAME_REQUIRED = (
    f"is required: send a standard event ({_STANDARD_LIST}) or a custom event configured "
    "for this Space."
)


def validate(
    data: Mapping[str, object],
    custom_events: frozenset[str],
    *,
    hints: int = fields.MAX_HINTS,
    listed: int = MAX_LISTED,
) -> tuple[dict[str, object], dict[str, list[str]]]:
    """Check an event against the contract; returns (the cleaned event, every problem).

    The cleaned event is `data` without its `None` values (`null` counts as absent); values
    are not normalised. The problems map a field name to its messages, and are empty when
    the event is valid. `custom_events` are the `custom_event_N` names the Space configured.
    The first `hints` unknown fields get a "did you mean" (a fuzzy match costs up to half a
    millisecond: a body of thousands of unknown names must not buy seconds of CPU), and the
    problems of at most `listed` fields are listed, the rest counted under `BODY`.
    """
    event: dict[str, object] = {}
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        bounds = _PLAIN.get(name)
        if (
            bounds is not None
            and type(value) is str
            and bounds[0] <= len(value) <= bounds[1]
            and "\x00" not in value
        ):  # a plain string within its bounds: nothing else to check
            event[name] = value
            continue
        kind = _KINDS.get(name)
        if kind is None:
            message: str | None = unknown_field(name, hints > 0)  # even when null
            hints -= 1
        elif value is None:
            continue
        elif kind is Kind.EVENT_NAME:
            message = _check_event_name(value, custom_events)
        else:
            message = _CHECKS[kind](value)
        if message is None and isinstance(value, str) and "\x00" in value:
            message = _HOLDS_NUL  # valid JSON (\u0000), but no upstream keeps it
        if value is not None:
            event[name] = value
        if message is not None:
            errors[name] = [message]
    if "event_name" not in event:
        errors["event_name"] = [_EVENT_NAME_REQUIRED]
    has_fingerprint, has_ip = "fingerprint" in event, "ip" in event
    if has_fingerprint and not has_ip:
        _add(errors, "ip", "is required together with fingerprint: send the client's IP address.")
    elif has_ip and not has_fingerprint:
        _add(errors, "fingerprint", "is required together with ip: send both, or neither.")
    elif not (has_ip or "email" in event or "comet_token" in event):
        _add(errors, "email", IDENTIFICATION_MESSAGE)
    return event, _bounded(errors, listed)


# The fields whose whole check is "a string of so many characters" (and no NUL): their valid
# values skip the dispatch to a check (most fields of most events are these).
_PLAIN_BOUNDS = {
    Kind.TEXT: (0, fields.MAX_TEXT_LENGTH),
    Kind.TOKEN: (1, fields.MAX_TOKEN_LENGTH),
    Kind.IDEMPOTENCY_KEY: (1, fields.MAX_IDEMPOTENCY_KEY_LENGTH),
}
_PLAIN = {name: _PLAIN_BOUNDS[kind] for name, kind in FIELDS.items() if kind in _PLAIN_BOUNDS}


def _bounded(errors: dict[str, list[str]], most: int) -> dict[str, list[str]]:
    """At most `most` fields' problems (a body of thousands of bad fields must not buy an
    answer many times its size); the rest are counted under `BODY`."""
    if len(errors) <= most:
        return errors
    shown = dict(list(errors.items())[:most])
    shown.setdefault(BODY, []).append(
        f"and {len(errors) - most} more fields with problems, not listed: fix these first."
    )
    return shown


def check(data: Mapping[str, object], custom_events: frozenset[str]) -> dict[str, object]:
    """The cleaned event (see `validate`); raises `Invalid` (422) listing every problem."""
    event, errors = validate(data, custom_events)
    if errors:
        raise Invalid(summary(errors), errors=errors)
    return event


def summary(errors: Mapping[str, list[str]], most: int = 10) -> str:
    """The message of a 422: how many problems, and the first `most` of them."""
    problems = [f"{name}: {message}" for name, messages in errors.items() for message in messages]
    count = len(problems)
    listed = "; ".join(problems[:most])
    more = f"; and {count - most} more (see errors)" if count > most else ""
    return f"The event is invalid: {count} problem{'' if count == 1 else 's'}. {listed}{more}"


# The checks: each takes a value that is not None and says what is wrong with it, or None.


def _check_event_name(value: object, custom_events: frozenset[str]) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string naming the event", value)
    if value in STANDARD_EVENTS or (value in custom_events and value in CUSTOM_EVENTS):
        return None
    shown = clip(value)
    if value in CUSTOM_EVENTS:
        configured = ", ".join(sorted(custom_events & CUSTOM_EVENTS, key=_custom_number))
        return (
            f"'{shown}' is not configured for this Space (its custom events: "
            f"{configured or 'none'}): configure it first, or send a standard event."
        )
    if value.startswith("custom_event_"):
        return (
            f"'{shown}' is not an event: custom events are custom_event_1 to "
            f"custom_event_{CUSTOM_EVENT_COUNT}, each configured for the Space before use."
        )
    hint = event_hint(value)
    return (
        f"'{shown}' is not an event: {hint}Events are the standard ones ({_STANDARD_LIST}) "
        "and the custom events configured for this Space."
    )


def _check_text(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string", value)
    return _too_long(value, fields.MAX_TEXT_LENGTH)


def _check_token(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string", value)
    if not value:
        return "must not be empty: send the value, or leave the field out."
    return _too_long(value, fields.MAX_TOKEN_LENGTH)


def _too_long(value: str, most: int) -> str | None:
    if len(value) <= most:
        return None
    return f"is {len(value)} characters long: this field holds at most {most}."


def _check_email(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string holding an email address", value)
    if len(value) > fields.MAX_EMAIL_LENGTH:
        return f"is {len(value)} characters long: an email address has at most {fields.MAX_EMAIL_LENGTH}."
    if _EMAIL.fullmatch(value) is None:
        return _not(
            value,
            "an email address",
            "it needs exactly one '@' with text on both sides, like name@example.com.",
        )
    return None


def _check_ip(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string holding an IP address", value)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    # A zone index (fe80::1%eth0) names an interface of the sender's host, not a client.
    if address is None or getattr(address, "scope_id", None):
        return _not(
            value,
            "an IP address",
            "send the client's IPv4 or IPv6 address, like 203.0.113.7 or 2001:db8::1.",
        )
    return None


def _check_url(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string holding a URL", value)
    if (too_long := _too_long(value, fields.MAX_TEXT_LENGTH)) is not None:
        return too_long
    if _URL.fullmatch(value) is None:
        return _not(
            value,
            "an absolute http(s) URL",
            "send the whole address, with scheme and host and without spaces, like "
            "https://example.com/page.",
        )
    return None


def _check_event_time(value: object) -> str | None:
    if isinstance(value, str):
        if not _is_iso(value):
            return _not(
                value,
                "an ISO 8601 date-time",
                "send one like 2024-05-01T12:30:00Z, or Unix time in seconds as a number.",
            )
        if _is_bare_date(value):
            return (
                f"'{clip(value)}' is a date without a time of day: send a date-time like "
                "2024-05-01T12:30:00Z, or Unix time in seconds as a number."
            )
        return None
    if not _is_number(value):
        return wrong_type("an ISO 8601 date-time string or a number of Unix seconds", value)
    if not _is_finite(value):
        return "must be a finite number of seconds since 1970-01-01T00:00:00Z."
    if value < 0:
        return "must not be negative: send Unix time in seconds since 1970-01-01T00:00:00Z."
    if value > fields.MAX_EVENT_TIME_SECONDS:
        return (
            f"{clip(repr(value))} is too large for Unix time in seconds and looks like "
            "milliseconds: divide it by 1000."
        )
    return None


def _check_number(value: object) -> str | None:
    if _is_number(value):
        return _in_range(value)
    message = wrong_type("a JSON number", value)
    if isinstance(value, str) and _is_number_text(value):
        message += f" Send {value} without the quotes."
    return message


def _check_boolean(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    return wrong_type("a boolean (true or false, without quotes)", value)


def _check_numeric(value: object) -> str | None:
    if _is_number(value):
        return _in_range(value)
    if not isinstance(value, str):
        return wrong_type("a number, or a string holding one", value)
    if len(value) > fields.MAX_NUMBER_TEXT_LENGTH or not _is_number_text(value):
        return _not(value, "a number", 'send one like 500 or "500".')
    return None  # a string: its size is bounded, its value is the upstream's to read


def _in_range(value: float) -> str | None:
    """A finite number of at most fields.MAX_NUMBER either way."""
    if not _is_finite(value):
        return "must be a finite number."
    if abs(value) > fields.MAX_NUMBER:
        return f"is out of range: a number here is at most 10^15 either way ({fields.MAX_NUMBER:.0e})."
    return None


def _check_date(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string holding an ISO 8601 date", value)
    if not _is_iso(value):
        return _not(
            value,
            "an ISO 8601 date or date-time",
            "send one like 2024-05-01 or 2024-05-01T12:30:00Z.",
        )
    return None


def _check_idempotency_key(value: object) -> str | None:
    if not isinstance(value, str):
        return wrong_type("a string", value)
    if not value:
        return "must not be empty: send a key unique to this event, or leave the field out."
    if len(value) > fields.MAX_IDEMPOTENCY_KEY_LENGTH:
        return (
            f"is {len(value)} characters long: an idempotency key has at most "
            f"{fields.MAX_IDEMPOTENCY_KEY_LENGTH}."
        )
    return None


_CHECKS: dict[Kind, Callable[[object], str | None]] = {
    Kind.TEXT: _check_text,
    Kind.TOKEN: _check_token,
    Kind.EMAIL: _check_email,
    Kind.IP: _check_ip,
    Kind.URL: _check_url,
    Kind.EVENT_TIME: _check_event_time,
    Kind.NUMBER: _check_number,
    Kind.BOOLEAN: _check_boolean,
    Kind.NUMERIC: _check_numeric,
    Kind.DATE: _check_date,
    Kind.IDEMPOTENCY_KEY: _check_idempotency_key,
}


def _not(value: str, what: str, advice: str) -> str:
    """The message for a string that is not what its field holds: the value, then the fix."""
    return f"'{clip(value)}' is not {what}: {advice}"


def _add(errors: dict[str, list[str]], name: str, message: str) -> None:
    errors.setdefault(name, []).append(message)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: float) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _is_number_text(value: str) -> bool:
    return _NUMBER_TEXT.fullmatch(value) is not None


def _is_iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def _is_bare_date(value: str) -> bool:
    try:
        date.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def _custom_number(name: str) -> int:
    return int(name.rpartition("_")[2])

