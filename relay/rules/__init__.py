"""The Create Event contract as pure functions: no HTTP, no storage.

`parse_body` turns request bytes into one JSON object, `validate` lists every problem of an
event and `check` raises `Invalid` (422) with them; `new_event` makes a checked event an
outbox entry with its dedup keys. `FIELDS` is the one table of the API's fields, which
`relay.rules.openapi` also describes.
"""

from relay.rules.body import parse_body, parse_json
from relay.rules.events import (
    PRIORITIES,
    PRIORITY_API_CONVERSION,
    PRIORITY_BROWSER_CONVERSION,
    PRIORITY_PAGE_VIEW,
    NewEvent,
    Source,
    TwinMatch,
    dedup_keys,
    new_event,
)
from relay.rules.fields import (
    BODY,
    CUSTOM_EVENTS,
    FIELDS,
    MAX_DEPTH,
    MAX_EMAIL_LENGTH,
    MAX_EVENT_TIME_SECONDS,
    MAX_HINTS,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_NUMBER,
    MAX_NUMBER_TEXT_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TOKEN_LENGTH,
    NUMBER_TEXT_PATTERN,
    PAGE_VIEW_EVENT,
    STANDARD_EVENTS,
    Kind,
)
from relay.rules.validate import check, validate

__all__ = [
    "BODY",
    "CUSTOM_EVENTS",
    "FIELDS",
    "MAX_DEPTH",
    "MAX_EMAIL_LENGTH",
    "MAX_EVENT_TIME_SECONDS",
    "MAX_HINTS",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_NUMBER",
    "MAX_NUMBER_TEXT_LENGTH",
    "MAX_TEXT_LENGTH",
    "MAX_TOKEN_LENGTH",
    "NUMBER_TEXT_PATTERN",
    "PAGE_VIEW_EVENT",
    "PRIORITIES",
    "PRIORITY_API_CONVERSION",
    "PRIORITY_BROWSER_CONVERSION",
    "PRIORITY_PAGE_VIEW",
    "STANDARD_EVENTS",
    "Kind",
    "NewEvent",
    "Source",
    "TwinMatch",
    "check",
    "dedup_keys",
    "new_event",
    "parse_body",
    "parse_json",
    "validate",
]
