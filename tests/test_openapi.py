"""The OpenAPI document: complete, self-consistent, and stating the rules relay.schema enforces."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from relay import rules
from relay.rules.openapi import openapi_schema
from tests.test_schema import BAD, GOOD

PATH = "/public-api/v1/events/track"


@pytest.fixture(scope="module")
def doc() -> Any:
    """The document, typed as the JSON it is served as."""
    document: Any = openapi_schema()
    return document


def event_schema(doc: Any) -> Any:
    return doc["components"]["schemas"]["Event"]


def properties(doc: Any) -> dict[str, Any]:
    return event_schema(doc)["properties"]


def resolve(doc: Any, ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_document_is_openapi_3_1_json(doc: Any) -> None:
    assert doc["openapi"] == "3.1.0"
    assert json.loads(json.dumps(doc)) == doc
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in refs(doc):
        assert ref.startswith("#/components/")
        resolve(doc, ref)  # raises KeyError when it points nowhere


def test_the_operation_uses_bearer_auth(doc: Any) -> None:
    operation = doc["paths"][PATH]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Event"}


def test_the_path_is_a_parameter() -> None:
    document: Any = openapi_schema("/api/track")
    assert list(document["paths"]) == ["/api/track"]


def test_responses_bodies_and_headers(doc: Any) -> None:
    responses = doc["paths"][PATH]["post"]["responses"]
    assert {"202", "401", "403", "408", "413", "422", "429"} <= set(responses)
    for status, response in responses.items():
        headers = response["headers"]
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(headers), status
        body = resolve(doc, response["content"]["application/json"]["schema"]["$ref"])
        assert "message" in body["required"], status
    assert {"Idempotency-Key", "Idempotent-Replayed"} <= set(responses["202"]["headers"])
    assert "Retry-After" in responses["429"]["headers"]
    assert resolve(doc, "#/components/headers/Retry-After")["required"] is True
    assert resolve(doc, "#/components/headers/Idempotent-Replayed")["required"] is False
    accepted = resolve(doc, responses["202"]["content"]["application/json"]["schema"]["$ref"])
    assert accepted["properties"]["status"] == {"const": 202}
    invalid = resolve(doc, responses["422"]["content"]["application/json"]["schema"]["$ref"])
    assert invalid["required"] == ["message", "errors"]
    errors = invalid["properties"]["errors"]
    assert errors["additionalProperties"] == {"type": "array", "items": {"type": "string"}}


def test_every_field_is_described_and_no_other(doc: Any) -> None:
    event = event_schema(doc)
    assert list(properties(doc)) == list(rules.FIELDS)
    assert event["additionalProperties"] is False
    assert event["required"] == ["event_name"]


@pytest.mark.parametrize("name", [name for name in rules.FIELDS if name != "event_name"])
def test_every_optional_field_admits_null(doc: Any, name: str) -> None:
    prop = properties(doc)[name]
    types = prop.get("type")
    branches = prop.get("anyOf", [])
    assert (isinstance(types, list) and "null" in types) or {"type": "null"} in branches


@pytest.mark.parametrize(
    ("name", "types"),
    [
        ("email", ["string", "null"]),
        ("comet_token", ["string", "null"]),
        ("order_id", ["string", "null"]),
        ("profile_field_1", ["string", "null"]),
        ("profile_field_26", ["string", "null"]),
        ("amount", ["number", "null"]),
        ("is_upsell", ["boolean", "null"]),
        ("do_not_capi", ["boolean", "null"]),
        ("idempotency_key", ["string", "null"]),
    ],
)
def test_field_types(doc: Any, name: str, types: list[str]) -> None:
    assert properties(doc)[name]["type"] == types


def test_composite_fields(doc: Any) -> None:
    props = properties(doc)
    assert props["event_time"]["anyOf"] == [
        {"type": "string", "format": "date-time"},
        {"type": "number", "minimum": 0, "maximum": rules.MAX_EVENT_TIME_SECONDS},
        {"type": "null"},
    ]
    bounded = {"type": "number", "minimum": -rules.MAX_NUMBER, "maximum": rules.MAX_NUMBER}
    assert props["profile_field_16"]["anyOf"] == [
        bounded,
        {"type": "string", "maxLength": rules.MAX_NUMBER_TEXT_LENGTH,
         "pattern": rules.NUMBER_TEXT_PATTERN},
        {"type": "null"},
    ]
    assert props["ip"]["anyOf"] == [{"format": "ipv4"}, {"format": "ipv6"}]
    assert props["idempotency_key"]["maxLength"] == rules.MAX_IDEMPOTENCY_KEY_LENGTH
    assert props["email"]["maxLength"] == rules.MAX_EMAIL_LENGTH


def test_event_name_is_a_standard_event_or_a_custom_one(doc: Any) -> None:
    name = properties(doc)["event_name"]
    assert name["type"] == "string"
    standard, custom = name["anyOf"]
    assert set(standard["enum"]) == rules.STANDARD_EVENTS
    pattern = re.compile(custom["pattern"])
    assert all(pattern.search(n) for n in rules.CUSTOM_EVENTS)
    assert not any(pattern.search(n) for n in ("custom_event_0", "custom_event_51", "x"))


def test_event_name_can_list_the_configured_custom_events() -> None:
    doc = openapi_schema(custom_events=["custom_event_3", "custom_event_10", "bought"])
    name = properties(doc)["event_name"]
    assert name["enum"] == sorted(rules.STANDARD_EVENTS) + ["custom_event_10", "custom_event_3"]


def test_identification_rules_are_stated(doc: Any) -> None:
    identification, fingerprint, ip = event_schema(doc)["allOf"]
    required = [branch["required"] for branch in identification["anyOf"]]
    assert required == [["email"], ["comet_token"], ["fingerprint", "ip"]]
    assert fingerprint["anyOf"][1]["required"] == ["ip"]
    assert ip["anyOf"][1]["required"] == ["fingerprint"]


def test_documents_are_independent() -> None:
    first = openapi_schema()
    properties(first)["amount"]["type"] = "broken"
    assert properties(openapi_schema())["amount"]["type"] == ["number", "null"]


# The document's patterns are the relay's own rules: they agree with validate() on the tables.


def pattern_rows() -> list[tuple[str, object, bool]]:
    rows: list[tuple[str, object, bool]] = []
    checked = {rules.Kind.EMAIL, rules.Kind.URL, rules.Kind.NUMERIC}
    for _, event in GOOD:
        rows += [
            (name, value, True)
            for name, value in event.items()
            if rules.FIELDS.get(name) in checked and isinstance(value, str)
        ]
    for _, event, field, _part in BAD:
        value = event.get(field)
        if rules.FIELDS.get(field) in checked and isinstance(value, str):
            rows.append((field, value, False))
    return rows


@pytest.mark.parametrize(
    ("name", "value", "valid"), pattern_rows(), ids=lambda value: str(value)[:40]
)
def test_patterns_agree_with_validate(doc: Any, name: str, value: str, valid: bool) -> None:
    prop = properties(doc)[name]
    string = next(
        (branch for branch in prop.get("anyOf", []) if branch.get("type") == "string"),
        prop,
    )
    matches = re.search(string["pattern"], value) is not None
    fits = len(value) <= string.get("maxLength", len(value))
    assert (matches and fits) is valid
