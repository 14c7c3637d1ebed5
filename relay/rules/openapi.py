"""The OpenAPI 3.1 document of the Create Event endpoint, built from `relay.rules.FIELDS`.

The request schema states the rules `relay.rules` enforces, with the same patterns and
limits: field kinds, the identification rule, the fingerprint/ip pair. Where JSON Schema
cannot say it all:
- a custom event must also be configured for the Space: pass `custom_events` to list them;
- `event_time` and the date profile fields are described as RFC 3339 `date-time`/`date`,
  while the relay also takes other common ISO 8601 forms (`2024-05-01 12:30`) and refuses a
  leap second;
- a number literal too large for a float (`1e999`) is refused by the relay.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from relay import __version__
from relay.rules import fields
from relay.rules.fields import BODY, FIELDS, Kind

Schema = dict[str, object]

# Text holds no NUL: valid JSON as \u0000, but refused by the rules (no upstream keeps it).
NO_NUL_PATTERN = r"^[^\x00]*$"
_STRING: Schema = {"type": "string"}
_TEXT: Schema = {"type": "string", "maxLength": fields.MAX_TEXT_LENGTH, "pattern": NO_NUL_PATTERN}
_NUMBER: Schema = {"type": "number", "minimum": -fields.MAX_NUMBER, "maximum": fields.MAX_NUMBER}
# A header value as sent and as read back: visible ASCII, with inner spaces and tabs.
HEADER_SAFE_PATTERN = r"^[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?$"
_KIND_SCHEMAS: dict[Kind, Schema] = {
    Kind.TEXT: _TEXT,
    Kind.TOKEN: {
        "type": "string",
        "minLength": 1,
        "maxLength": fields.MAX_TOKEN_LENGTH,
        "pattern": NO_NUL_PATTERN,
    },
    Kind.EMAIL: {
        "type": "string",
        "maxLength": fields.MAX_EMAIL_LENGTH,
        "pattern": fields.EMAIL_PATTERN,
    },
    Kind.IP: {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    Kind.URL: {
        "type": "string",
        "maxLength": fields.MAX_TEXT_LENGTH,
        "pattern": fields.URL_PATTERN,
    },
    Kind.EVENT_TIME: {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "number", "minimum": 0, "maximum": fields.MAX_EVENT_TIME_SECONDS},
        ]
    },
    Kind.NUMBER: _NUMBER,
    Kind.BOOLEAN: {"type": "boolean"},
    Kind.NUMERIC: {
        "anyOf": [
            _NUMBER,
            {
                "type": "string",
                "maxLength": fields.MAX_NUMBER_TEXT_LENGTH,
                "pattern": fields.NUMBER_TEXT_PATTERN,
            },
        ]
    },
    Kind.DATE: {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]},
    Kind.IDEMPOTENCY_KEY: {
        "type": "string",
        "minLength": 1,
        "maxLength": fields.MAX_IDEMPOTENCY_KEY_LENGTH,
        "pattern": NO_NUL_PATTERN,
    },
}

_DESCRIPTIONS: dict[str, str] = {
    "event_name": "A standard event, or a custom_event_N configured for the Space.",
    "email": "Identification: the person's email address.",
    "comet_token": "Identification: the Cometly tracking token.",
    "fingerprint": "Identification, only together with ip: a browser fingerprint.",
    "ip": "The client's IPv4 or IPv6 address, only together with fingerprint.",
    "tracking_id": "Events with the same tracking_id belong to the same contact.",
    "event_time": "ISO 8601 date-time with a time of day, or Unix time in seconds.",
    "url": "Where the event happened: an absolute http(s) URL.",
    "amount": "Transaction amount: a finite JSON number (not a string).",
    "order_id": "Used for deduplication: events with the same order_id may be duplicates.",
    "idempotency_key": "The same key is processed at most once; safe retries.",
    "do_not_capi": "true: never sent on to Conversions API integrations.",
}


def openapi_schema(
    path: str = "/public-api/v1/events/track", *, custom_events: Iterable[str] | None = None
) -> dict[str, object]:
    """An OpenAPI 3.1 document describing `POST path`, the Create Event API.

    `custom_events`, when given, lists the only custom events the document admits (those of
    the Space a client or a fuzzer will use); otherwise any custom_event_1..50 matches.
    """
    document: dict[str, object] = {
        "openapi": "3.1.0",
        "info": {
            "title": "comet-relay Create Event API",
            "version": __version__,
            "description": (
                "Create an event to track a conversion or an interaction. The same API as "
                "the upstream's Create Event endpoint, served by the relay."
            ),
        },
        "paths": {
            path: {
                "post": {
                    "operationId": "createEvent",
                    "summary": "Create Event",
                    "description": (
                        "Validates the event, queues it durably and answers 202. Checks run "
                        "in this order: authentication (401/403), rate limit (429), size "
                        "(413), validation (422). A duplicate (same idempotency_key, or same "
                        "event_name and order_id, within the dedup window) is answered 202 "
                        "with Idempotent-Replayed: true and is not queued again."
                    ),
                    "security": [{"bearerAuth": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Event"}}
                        },
                    },
                    "responses": _responses(),
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The API token of one Space.",
                }
            },
            "schemas": {
                "Event": event_schema(custom_events),
                "Accepted": _object({"status": {"const": 202}, "message": _STRING}),
                "Error": _object({"message": _STRING}),
                "ValidationError": _object(
                    {
                        "message": _STRING,
                        "errors": {
                            "type": "object",
                            "description": (
                                "Every problem, by field name; a problem of the body as a "
                                f"whole (not JSON, not an object) is listed under `{BODY}`."
                            ),
                            "additionalProperties": {"type": "array", "items": _STRING},
                        },
                    }
                ),
            },
            "headers": {
                "X-RateLimit-Limit": _count_header(
                    "Requests allowed per minute for the Space.", required=True
                ),
                "X-RateLimit-Remaining": _count_header(
                    "Requests left in the current window.", required=True
                ),
                "Retry-After": _count_header("Seconds to wait before retrying.", required=True),
                "Idempotent-Replayed": {
                    "description": "true when the event duplicates one already accepted.",
                    "required": False,
                    "schema": {"type": "string", "enum": ["true"]},
                },
                "Idempotency-Key": {
                    "description": (
                        "The event's idempotency key: the one sent, or the one the relay "
                        "assigned. Absent on a duplicate that sent no key of its own, and "
                        "when the key sent is not printable ASCII without surrounding "
                        "spaces, which no header value carries unchanged."
                    ),
                    "required": False,
                    "schema": {"type": "string", "pattern": HEADER_SAFE_PATTERN},
                },
            },
        },
    }
    return copy.deepcopy(document)  # the parts are shared constants; hand out a free copy


def event_schema(custom_events: Iterable[str] | None = None) -> Schema:
    """The JSON Schema (2020-12) of the request body; see `openapi_schema`."""
    properties: dict[str, Schema] = {}
    for name, kind in FIELDS.items():
        if kind is Kind.EVENT_NAME:
            prop = _event_name(custom_events)
        else:
            prop = _nullable(_KIND_SCHEMAS[kind])
        if name in _DESCRIPTIONS:
            prop = {**prop, "description": _DESCRIPTIONS[name]}
        properties[name] = prop
    # A null value counts as absent, so "present" below means "present and a string".
    present = {"type": "string"}
    absent = {"type": "null"}  # also holds for a missing property
    return {
        "type": "object",
        "description": "One event, every field at the root; null counts as absent.",
        "properties": properties,
        "required": ["event_name"],
        "additionalProperties": False,
        "allOf": [
            {
                "description": "At least one identification.",
                "anyOf": [
                    {"required": ["email"], "properties": {"email": present}},
                    {"required": ["comet_token"], "properties": {"comet_token": present}},
                    {
                        "required": ["fingerprint", "ip"],
                        "properties": {"fingerprint": present, "ip": present},
                    },
                ],
            },
            {
                "description": "fingerprint only together with ip.",
                "anyOf": [
                    {"properties": {"fingerprint": absent}},
                    {"required": ["ip"], "properties": {"ip": present}},
                ],
            },
            {
                "description": "ip only together with fingerprint.",
                "anyOf": [
                    {"properties": {"ip": absent}},
                    {"required": ["fingerprint"], "properties": {"fingerprint": present}},
                ],
            },
        ],
    }


def _event_name(custom_events: Iterable[str] | None) -> Schema:
    standard = sorted(fields.STANDARD_EVENTS)
    if custom_events is not None:
        return {
            "type": "string",
            "enum": standard + sorted(fields.CUSTOM_EVENTS.intersection(custom_events)),
        }
    return {
        "type": "string",
        "anyOf": [{"enum": standard}, {"pattern": fields.CUSTOM_EVENT_PATTERN}],
    }


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    branches = schema["anyOf"]
    if not isinstance(branches, list):
        raise TypeError(f"a kind's schema needs a 'type' or an 'anyOf': {schema}")
    return {**schema, "anyOf": [*branches, {"type": "null"}]}


def _object(properties: dict[str, Schema]) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
    }


def _count_header(description: str, *, required: bool) -> Schema:
    return {
        "description": description,
        "required": required,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }


def _header_ref(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


def _answer(description: str, schema: str, *extra_headers: str) -> Schema:
    headers = ("X-RateLimit-Limit", "X-RateLimit-Remaining", *extra_headers)
    return {
        "description": description,
        "headers": {name: _header_ref(name) for name in headers},
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _responses() -> dict[str, object]:
    return {
        "202": _answer(
            "Accepted and durably queued, or a duplicate of an event that was.",
            "Accepted",
            "Idempotency-Key",
            "Idempotent-Replayed",
        ),
        "401": _answer("Authorization missing, malformed, or an unknown token.", "Error"),
        "403": _answer("The token lacks permission, or the Space is inactive.", "Error"),
        "408": _answer("The body did not arrive within the relay's time limit.", "Error"),
        "413": _answer("The body is larger than the relay's limit.", "Error"),
        "422": _answer("Validation failed; `errors` lists every problem.", "ValidationError"),
        "429": _answer("Over the Space's rate limit.", "Error", "Retry-After"),
        "503": _answer("Nothing was accepted: the event could not be stored; retry.", "Error"),
    }
