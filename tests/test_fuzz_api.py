"""schemathesis against the relay's own /openapi.json, over HTTP to a real relay process.

Every answer must be one the document lists, with the body and the headers it documents, and
none a 5xx; an event the document calls valid must be accepted, one it calls invalid refused.
Without a valid key every answer to a POST is the documented 401. Bounded and deterministic
in CI; `FUZZ_EXAMPLES=5000` makes it a long run (see tests/fuzz_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import positive_data_acceptance

from relay.rules import CUSTOM_EVENTS
from tests.fuzz_support import fuzz_settings
from tests.support import RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"
KEY = "key-fuzz-write"
READ_KEY = "key-fuzz-read"
TINY_KEY = "key-tiny"  # a Space allowed one request a minute
GONE_KEY = "key-gone"  # a Space whose subscription ended
EXAMPLES = 300


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    # Every custom event is configured: the document admits any custom_event_N, since which
    # ones a Space configured is not something one document for every Space can say.
    custom = ", ".join(f'"{name}"' for name in sorted(CUSTOM_EVENTS))
    config = write_config(
        tmp_path_factory.mktemp("fuzz-api"),
        [
            Space(
                "fuzz",
                keys={KEY: ["events:write"], READ_KEY: ["events:read"]},
                extra=f"custom_events = [{custom}]\nrate_limit_per_minute = 1000000",
            ),
            Space("tiny", keys={TINY_KEY: ["events:write"]}, extra="rate_limit_per_minute = 1"),
            Space("gone", keys={GONE_KEY: ["events:write"]}, extra="active = false"),
        ],
        relay_extra="max_body_bytes = 4096",  # small enough that the fuzzer meets the 413
    )
    with RelayProcess(config) as proc:
        yield proc


@pytest.fixture(scope="module")
def api_schema(relay: RelayProcess) -> schemathesis.BaseSchema:
    """The document the relay serves at /openapi.json, aimed at that relay."""
    # Stricter than schemathesis's defaults: only the contract's answers. A body over
    # max_body_bytes is refused (413) before it is read, valid or not; 405 is another method.
    checks = {
        "negative_data_rejection": {
            "expected-statuses": ["401", "403", "405", "413", "422", "429"]
        },
        "positive_data_acceptance": {"expected-statuses": ["202", "401", "403", "413", "429"]},
    }
    config = schemathesis.Config.from_dict(
        {"base-url": relay.url, "request-timeout": 10, "checks": checks}
    )
    return schemathesis.openapi.from_url(f"{relay.url}/openapi.json", config=config)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy loader reads and rewrites `item._nodeid`, which pytest 9.2 no
    # longer has; give it the attribute (pytest's own `nodeid` is unaffected).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@fuzz_settings(EXAMPLES)
def test_every_answer_is_documented(case: Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})


@schema.parametrize()
@fuzz_settings(EXAMPLES // 3)
def test_without_a_valid_key_every_answer_is_401(case: Case) -> None:
    # schemathesis makes up the bearer token (or sends none): positive data meets a 401 here.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if response.request.method == "POST":  # the coverage phase also tries other methods: 405
        assert response.status_code == 401, response.text


EVENT = {"event_name": "purchase", "email": "a@b.co", "amount": 49}
ANSWERS = [
    # label, the key, the body, how many times it is sent, the status of the last answer
    ("duplicate", KEY, {**EVENT, "idempotency_key": "fuzz-dup"}, 2, 202),
    ("too large", KEY, {**EVENT, "full_name": "x" * 5000}, 1, 413),
    ("rate limited", TINY_KEY, EVENT, 2, 429),
    ("no permission", READ_KEY, EVENT, 1, 403),
    ("inactive Space", GONE_KEY, EVENT, 1, 403),
    ("unknown key", "key-nobody-has", EVENT, 1, 401),
]


@pytest.mark.parametrize(
    ("label", "key", "body", "times", "status"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_answers_the_fuzzer_rarely_meets_match_the_document(
    api_schema: schemathesis.BaseSchema,
    label: str,
    key: str,
    body: dict[str, object],
    times: int,
    status: int,
) -> None:
    operation = api_schema[PATH]["POST"]
    for _ in range(times):
        case = operation.Case(body=body, media_type="application/json")
        # Valid data meets a refusal here on purpose: only that check does not apply.
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {key}"},
            excluded_checks=[positive_data_acceptance],
        )
    assert response.status_code == status, response.text
    if label == "duplicate":
        assert response.headers["idempotent-replayed"] == ["true"]


def test_the_document_has_only_the_operation_fuzzed(relay: RelayProcess) -> None:
    document = httpx.get(f"{relay.url}/openapi.json", timeout=10).json()
    assert list(document["paths"]) == [PATH]
    assert set(document["paths"][PATH]) == {"post"}


@pytest.mark.parametrize("key", ["snow\u2603man", "a\r\nSet-Cookie: x=y", "bell\x07", " padded "])
def test_a_key_that_is_no_header_value_is_still_answered(relay: RelayProcess, key: str) -> None:
    event = {"event_name": "purchase", "email": "a@b.co", "idempotency_key": key}
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{relay.url}{PATH}", json=event, headers=headers, timeout=10)
    assert r.status_code == 202
    assert r.headers.get("Idempotency-Key", key) == key  # left out, or sent as it is
    assert "set-cookie" not in r.headers
