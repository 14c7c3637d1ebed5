"""What the Create Event API accepts: its fields, their kinds, its events and its limits.

`FIELDS` is the one table of the API's fields; `relay.rules.validate` checks events against
it and `relay.rules.openapi` describes it, so both stay in step. The patterns below are the
rules themselves (matched whole), written in the common subset of Python's and ECMA-262's
regex syntax so the OpenAPI document can carry them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

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
# The attribution fields: where the visit came from.
COMET_FIELDS: tuple[str, ...] = (
    "comet_source",
    "comet_network",
    "comet_campaign",
    "comet_ad_group",
    "comet_ad_id",
    "comet_keyword",
    "comet_type",
)

MAX_EMAIL_LENGTH = 254
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_TOKEN_LENGTH = 255  # comet_token, fingerprint
MAX_TEXT_LENGTH = 2048  # any other text, a URL and a user agent included
# Amounts and numeric profile fields: at most 10^15 either way (a refund is negative, and
# real); a number held in a string at most this many characters.
MAX_NUMBER = 10**15
MAX_NUMBER_TEXT_LENGTH = 32
# Unix seconds up to the year 5138; a millisecond time of any date since 1973 is larger.
MAX_EVENT_TIME_SECONDS = 10**11
MAX_DEPTH = 32
MAX_HINTS = 3  # unknown fields of one event that get a "did you mean" (see validate)

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
