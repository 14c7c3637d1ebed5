"""The Create Event API's rules (CONTRACT.md §1) as pure functions.

`parse_body` turns request bytes into a JSON object, `validate` lists every problem of an
event, `check` raises `Invalid` (422) with that list; every `Invalid` raised here has `errors`,
as the contract's 422 answer does (a problem of the body as a whole is listed under `BODY`).
`FIELDS` is the one table of what the API accepts; `relay.openapi` builds the request schema
from it, so both stay in step.

Decisions where the contract is silent:
- a key sent twice in one object is refused: the relay and the upstream must not read
  different values from the same body;
- a UTF-8 byte order mark before the JSON is tolerated;
- `event_time` as a string must carry a time of day (a bare date is refused) and is read
  by `datetime.fromisoformat` (ISO 8601 in its common forms; `t`/`z` in either case);
- an empty `comet_token`, `fingerprint` or `idempotency_key` is refused: it identifies nothing;
- a string in `profile_field_16` … `_25` holds a decimal number: an optional sign, digits
  with an optional fraction, an optional exponent (`"500"`, `"-1.5"`, `".5"`, `"2e3"`), and
  nothing else (no spaces, no "inf" or "nan").
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TypeGuard

from relay.errors import Invalid

STANDARD_EVENTS: frozenset[str] = frozenset(
    {
        "lead_generated",
        "view_content",
        "schedule",
        "purchase",
        "subscribe",
        "add_to_cart",
        "contact",
        "initiate_checkout",
        "add_payment_info",
        "complete_registration",
        "start_trial",
        "sign_up",
        "submit_application",
        "webinar_registration",
    }
)
PAGE_VIEW_EVENT = "view_content"
CUSTOM_EVENT_COUNT = 50
CUSTOM_EVENTS: frozenset[str] = frozenset(
    f"custom_event_{n}" for n in range(1, CUSTOM_EVENT_COUNT + 1)
)
PROFILE_FIELD_COUNT = 30

MAX_EMAIL_LENGTH = 254
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Unix seconds up to the year 5138; a millisecond time of any date since 1973 is larger.
MAX_EVENT_TIME_SECONDS = 10**11
MAX_DEPTH = 32
MAX_HINTS = 3  # unknown fields of one event that get a "did you mean" (see validate)
_HOLDS_NUL = "holds a NUL character (\\u0000), which no text may hold: remove it."

# These patterns are the rules themselves (matched whole), and are written in the common
# subset of Python's and ECMA-262's regex syntax so the OpenAPI document can carry them.
CUSTOM_EVENT_PATTERN = r"^custom_event_([1-9]|[1-4][0-9]|50)$"
EMAIL_PATTERN = r"^[^@\x00]+@[^@\x00]+$"
URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://"
    r"([^\x00-\x20\x7f/?#@]*@)?"  # user info
    r"(\[[0-9A-Fa-f:.]+\]|[^\x00-\x20\x7f/?#@:\[\]]+)"  # host: an IPv6 literal or a name
    r"(:[0-9]*)?"  # port
    r"([/?#][^\x00-\x20\x7f]*)?$"  # path, query, fragment
)
NUMBER_TEXT_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


class Kind(StrEnum):
    """What a field holds; each kind has one check below and one JSON schema in openapi.py."""

    EVENT_NAME = "event_name"
    TEXT = "text"  # any string
    TOKEN = "token"  # a non-empty string
    EMAIL = "email"
    IP = "ip"
    URL = "url"
    EVENT_TIME = "event_time"  # ISO 8601 date-time string, or Unix seconds
    NUMBER = "number"  # a finite JSON number
    BOOLEAN = "boolean"
    NUMERIC = "numeric"  # a number, or a string holding one
    DATE = "date"  # ISO 8601 date or date-time string
    IDEMPOTENCY_KEY = "idempotency_key"


def _fields() -> dict[str, Kind]:
    text = Kind.TEXT
    fields = {
        "event_name": Kind.EVENT_NAME,
        "email": Kind.EMAIL,
        "comet_token": Kind.TOKEN,
        "fingerprint": Kind.TOKEN,
        "ip": Kind.IP,
        "tracking_id": text,
        "full_name": text,
        "first_name": text,
        "last_name": text,
        "phone": text,
        "user_agent": text,
        "event_time": Kind.EVENT_TIME,
        "url": Kind.URL,
        "amount": Kind.NUMBER,
        "order_id": text,
        "order_name": text,
        "checkout_token": text,
        "is_upsell": Kind.BOOLEAN,
        "upsell_common_id": text,
        "comet_source": text,
        "comet_network": text,
        "comet_campaign": text,
        "comet_ad_group": text,
        "comet_ad_id": text,
        "comet_keyword": text,
        "comet_type": text,
    }
    for n in range(1, PROFILE_FIELD_COUNT + 1):
        fields[f"profile_field_{n}"] = text if n <= 15 else Kind.NUMERIC if n <= 25 else Kind.DATE
    fields["idempotency_key"] = Kind.IDEMPOTENCY_KEY
    fields["do_not_capi"] = Kind.BOOLEAN
    return fields


_KINDS = _fields()
FIELDS: Mapping[str, Kind] = MappingProxyType(_KINDS)
"""Every field of the API, in the contract's order, and the kind of value it holds."""

BODY = "body"
"""The name under which a 422's `errors` lists a problem of the whole body, not of a field."""

IDENTIFICATION_MESSAGE = (
    "is missing, and so are comet_token and fingerprint with ip: identify the person by "
    "email, or comet_token, or fingerprint together with ip."
)

_EMAIL = re.compile(EMAIL_PATTERN)
_URL = re.compile(URL_PATTERN)
_NUMBER_TEXT = re.compile(NUMBER_TEXT_PATTERN)
_PROFILE_FIELD = re.compile(r"profile_field_?([0-9]+)")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_FIELD_NAMES = tuple(FIELDS)
_STANDARD_NAMES = tuple(sorted(STANDARD_EVENTS))
_STANDARD_LIST = ", ".join(_STANDARD_NAMES)
_EVENT_NAME_REQUIRED = (
    f"is required: send a standard event ({_STANDARD_LIST}) or a custom event configured "
    "for this Space."
)

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

# Meta pixel names and habits for the standard events (CONTRACT.md §4).
_EVENT_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "lead": ("lead_generated",),
        "page_view": ("view_content",),
        "pageview": ("view_content",),
        "signup": ("sign_up",),
        "order": ("purchase",),
    }
)


def parse_body(raw: bytes) -> dict[str, object]:
    """The request body as one JSON object; raises `Invalid` (422), and only that, otherwise.

    Refused: what `parse_json` refuses, and any JSON value that is not an object.
    """
    data = parse_json(raw)
    if not isinstance(data, dict):
        hint = " Send one event per request." if isinstance(data, list) else ""
        raise _bad_body(
            "The body must be one JSON object with every field at its root, "
            f"got {_json_type(data)}.{hint}"
        )
    return data


def parse_json(raw: bytes) -> object:
    """The request body as a JSON value; raises `Invalid` (422), and only that, otherwise.

    Refused: invalid UTF-8, text that is not JSON, NaN and Infinity, integers too long to
    convert, a key repeated in one object, nesting deeper than `MAX_DEPTH`, and escapes of
    lone UTF-16 surrogates.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad_body(
            f"The body is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}): "
            "send the JSON encoded as UTF-8."
        ) from None
    if not text or text.isspace():
        raise _bad_body("The body is empty: send the event as one JSON object.")
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _bad_body(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    except _Refused as exc:
        raise Invalid(str(exc), errors=exc.errors or {BODY: [str(exc)]}) from None
    except RecursionError:
        raise _bad_body(_TOO_DEEP) from None
    except ValueError:  # int() refuses a literal of more digits than sys.get_int_max_str_digits()
        raise _bad_body(
            "The body holds an integer with thousands of digits: send numbers of a sane size."
        ) from None
    # Nesting needs brackets: a body with few of them (every event) skips the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        raise _bad_body(_TOO_DEEP)
    # A lone surrogate can only come from a \uD8xx-style escape, so only such bodies pay for
    # the check; left in, it would fail later when the event is encoded for the outbox.
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_body(
                "The body holds a \\u escape of a lone UTF-16 surrogate, which is not text: "
                "escape a character beyond U+FFFF as a surrogate pair."
            ) from None
    return data


def validate(
    data: Mapping[str, object], custom_events: frozenset[str], *, hints: int = MAX_HINTS
) -> tuple[dict[str, object], dict[str, list[str]]]:
    """Check an event against the contract; returns (the cleaned event, every problem).

    The cleaned event is `data` without its `None` values (`null` counts as absent); values
    are not normalised. The problems map a field name to its messages, and are empty when
    the event is valid. `custom_events` are the `custom_event_N` names the Space configured.
    The first `hints` unknown fields get a "did you mean" (a fuzzy match costs up to half a
    millisecond: a body of thousands of unknown names must not buy seconds of CPU).
    """
    event: dict[str, object] = {}
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        kind = _KINDS.get(name)
        if kind is None:
            message: str | None = _unknown_field(name, hints > 0)  # even when null
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
    return event, errors


def check(data: Mapping[str, object], custom_events: frozenset[str]) -> dict[str, object]:
    """The cleaned event (see `validate`); raises `Invalid` (422) listing every problem."""
    event, errors = validate(data, custom_events)
    if errors:
        raise Invalid(_summary(errors), errors=errors)
    return event


def _bad_body(message: str) -> Invalid:
    """422 for the body as a whole: `errors` names `BODY`, as the contract's 422 has `errors`."""
    return Invalid(message, errors={BODY: [message]})


def _summary(errors: Mapping[str, list[str]], most: int = 10) -> str:
    problems = [f"{name}: {message}" for name, messages in errors.items() for message in messages]
    count = len(problems)
    listed = "; ".join(problems[:most])
    more = f"; and {count - most} more (see errors)" if count > most else ""
    return f"The event is invalid: {count} problem{'' if count == 1 else 's'}. {listed}{more}"


# The checks: each takes a value that is not None and says what is wrong with it, or None.


def _check_event_name(value: object, custom_events: frozenset[str]) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string naming the event", value)
    if value in STANDARD_EVENTS or (value in custom_events and value in CUSTOM_EVENTS):
        return None
    shown = _clip(value)
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
    hint = _did_you_mean(value, _EVENT_ALIASES, _STANDARD_NAMES)
    return (
        f"'{shown}' is not an event: {hint}Events are the standard ones ({_STANDARD_LIST}) "
        "and the custom events configured for this Space."
    )


def _check_text(value: object) -> str | None:
    return None if isinstance(value, str) else _wrong_type("a string", value)


def _check_token(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string", value)
    return None if value else "must not be empty: send the value, or leave the field out."


def _check_email(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string holding an email address", value)
    if len(value) > MAX_EMAIL_LENGTH:
        return f"is {len(value)} characters long: an email address has at most {MAX_EMAIL_LENGTH}."
    if _EMAIL.fullmatch(value) is None:
        return (
            f"'{_clip(value)}' is not an email address: it needs exactly one '@' with text "
            "on both sides, like name@example.com."
        )
    return None


def _check_ip(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string holding an IP address", value)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    # A zone index (fe80::1%eth0) names an interface of the sender's host, not a client.
    if address is None or getattr(address, "scope_id", None):
        return (
            f"'{_clip(value)}' is not an IP address: send the client's IPv4 or IPv6 address, "
            "like 203.0.113.7 or 2001:db8::1."
        )
    return None


def _check_url(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string holding a URL", value)
    if _URL.fullmatch(value) is None:
        return (
            f"'{_clip(value)}' is not an absolute http(s) URL: send the whole address, with "
            "scheme and host and without spaces, like https://example.com/page."
        )
    return None


def _check_event_time(value: object) -> str | None:
    if isinstance(value, str):
        if not _is_iso(value):
            return (
                f"'{_clip(value)}' is not an ISO 8601 date-time: send one like "
                "2024-05-01T12:30:00Z, or Unix time in seconds as a number."
            )
        if _is_bare_date(value):
            return (
                f"'{_clip(value)}' is a date without a time of day: send a date-time like "
                "2024-05-01T12:30:00Z, or Unix time in seconds as a number."
            )
        return None
    if not _is_number(value):
        return _wrong_type("an ISO 8601 date-time string or a number of Unix seconds", value)
    if not _is_finite(value):
        return "must be a finite number of seconds since 1970-01-01T00:00:00Z."
    if value < 0:
        return "must not be negative: send Unix time in seconds since 1970-01-01T00:00:00Z."
    if value > MAX_EVENT_TIME_SECONDS:
        return (
            f"{_clip(repr(value))} is too large for Unix time in seconds and looks like "
            "milliseconds: divide it by 1000."
        )
    return None


def _check_number(value: object) -> str | None:
    if _is_number(value):
        return None if _is_finite(value) else "must be a finite number."
    message = _wrong_type("a JSON number", value)
    if isinstance(value, str) and _is_number_text(value):
        message += f" Send {value} without the quotes."
    return message


def _check_boolean(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    return _wrong_type("a boolean (true or false, without quotes)", value)


def _check_numeric(value: object) -> str | None:
    if _is_number(value):
        return None if _is_finite(value) else "must be a finite number."
    if not isinstance(value, str):
        return _wrong_type("a number, or a string holding one", value)
    if not _is_number_text(value):
        return f"'{_clip(value)}' is not a number: send one like 500 or \"500\"."
    return None


def _check_date(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string holding an ISO 8601 date", value)
    if not _is_iso(value):
        return (
            f"'{_clip(value)}' is not an ISO 8601 date or date-time: send one like "
            "2024-05-01 or 2024-05-01T12:30:00Z."
        )
    return None


def _check_idempotency_key(value: object) -> str | None:
    if not isinstance(value, str):
        return _wrong_type("a string", value)
    if not value:
        return "must not be empty: send a key unique to this event, or leave the field out."
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        return (
            f"is {len(value)} characters long: an idempotency key has at most "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH}."
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


def _unknown_field(name: str, suggest: bool = True) -> str:
    shown = _clip(name)
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


def _deeper_than(data: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterable[object] = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_TOO_DEEP = (
    f"The body is nested more than {MAX_DEPTH} levels deep: an event is one flat JSON "
    "object, every field at its root."
)

_JSON_TYPES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), f"a {type(value).__name__}")


def _wrong_type(expected: str, value: object) -> str:
    return f"must be {expected}, got {_json_type(value)}."


def _clip(text: str, most: int = 80) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


class _Refused(ValueError):
    """Raised from inside json.loads to stop it; becomes `Invalid`."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


def _refuse_constant(name: str) -> object:
    raise _Refused(f"The body holds {name}, which is not JSON: send a finite number, or null.")


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data = dict(pairs)
    if len(data) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        repeated = [key for key, count in counts.items() if count > 1]
        names = ", ".join(_clip(key, 40) for key in repeated)
        raise _Refused(
            f"The body sends a key more than once in one object ({names}): send each once.",
            {key: ["is sent more than once: send it once."] for key in repeated},
        )
    return data


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_object)
