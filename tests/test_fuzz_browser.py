"""The browser endpoint (POST /e) fuzzed over HTTP, against a real relay process.

Whatever the body (bytes, broken JSON, batches of good, bad and forged events, too many of
them), the answer is 202, 413 or 422, never a 5xx, with the JSON the module docstring of
relay/browser.py describes, the CORS headers and a visitor cookie. A 202 accounts for every
event of the batch: accepted + duplicates + refused. Bounded and deterministic in CI;
`FUZZ_EXAMPLES=5000` makes it a long run (see tests/fuzz_support.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from relay.enrich.browser_event import OPTIONAL_USER_FIELDS
from tests.fuzz_support import fuzz_settings
from tests.support import RelayProcess, Space, write_config
from tests.test_fuzz_schema import batches, browser_events, event_of

ORIGIN = "https://fuzz.example"
MAX_EVENTS = 5
EXAMPLES = 150
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    config = write_config(
        tmp_path_factory.mktemp("fuzz-browser"),
        [Space("fuzz", extra='custom_events = ["custom_event_3", "custom_event_17"]')],
        relay_extra=(
            f"max_body_bytes = 4096\nmax_batch_events = {MAX_EVENTS}\n"
            "browser_rate_limit_per_minute = 1000000"
        ),
    )
    with RelayProcess(config) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(relay: RelayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        yield c


def events_in(raw: bytes) -> int | None:
    """How many events the batch `raw` holds, when it is one the relay reads; else None."""
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except ValueError:
        return None
    events = data.get("e") if isinstance(data, dict) else None
    return len(events) if isinstance(events, list) else None


def assert_a_refusal(body: object) -> None:
    assert isinstance(body, dict) and isinstance(body.get("message"), str)
    assert set(body) <= {"message", "errors"}


def post(
    client: httpx.Client, raw: bytes, user_agent: str = CHROME, content_type: str = ""
) -> httpx.Response:
    headers = {"Origin": ORIGIN, "User-Agent": user_agent}
    if content_type:
        headers["Content-Type"] = content_type
    return client.post("/e?k=pk_fuzz", content=raw, headers=headers)


@fuzz_settings(EXAMPLES)
@given(
    raw=batches,
    content_type=st.sampled_from(["text/plain;charset=UTF-8", "application/json", ""]),
    user_agent=st.sampled_from([CHROME, CHROME, GOOGLEBOT, ""]),
)
@example(raw=b"", content_type="text/plain", user_agent=CHROME)
@example(raw=json.dumps({"e": [{}] * 6}).encode(), content_type="", user_agent=CHROME)
@example(raw=b'{"e": [' + b"1," * 3000 + b"1]}", content_type="", user_agent=CHROME)
def test_every_answer_is_one_the_endpoint_documents(
    client: httpx.Client, raw: bytes, content_type: str, user_agent: str
) -> None:
    r = post(client, raw, user_agent, content_type)
    assert r.status_code in (202, 413, 422), r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "_comet=" in r.headers["set-cookie"]
    body = r.json()
    if r.status_code != 202:
        assert_a_refusal(body)
        return
    count = events_in(raw)
    assert count is not None and count <= MAX_EVENTS
    if body.get("bot"):
        assert user_agent == GOOGLEBOT
        assert body == {"accepted": 0, "merged": 0, "duplicates": 0, "refused": [], "dropped": [], "bot": True}
        return
    assert set(body) == {"accepted", "merged", "duplicates", "refused", "dropped"}
    assert body["accepted"] + body["duplicates"] + len(body["refused"]) == count
    refused_at = {refused["index"] for refused in body["refused"]}
    for dropped in body["dropped"]:  # kept without a bad optional user field
        assert set(dropped) == {"index", "event_id", "errors"}
        assert 0 <= dropped["index"] < count and dropped["index"] not in refused_at
        assert dropped["errors"] and set(dropped["errors"]) <= set(OPTIONAL_USER_FIELDS)
    for refused in body["refused"]:
        assert set(refused) == {"index", "event_id", "errors"}
        assert 0 <= refused["index"] < count
        assert refused["event_id"] is None or isinstance(refused["event_id"], str)
        assert refused["errors"] and all(
            isinstance(messages, list) and messages for messages in refused["errors"].values()
        )


@fuzz_settings(EXAMPLES // 3)
@given(st.lists(browser_events(valid=True).map(event_of), min_size=1, max_size=MAX_EVENTS))
def test_a_batch_of_valid_events_is_accepted_whole(
    client: httpx.Client, events: list[object]
) -> None:
    raw = json.dumps({"e": events}).encode()
    if len(raw) > 4096:  # max_body_bytes: the other test covers the 413
        return
    r = post(client, raw)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["refused"] == [], body
    assert body["accepted"] + body["duplicates"] == len(events)
