"""The Create Event API over real HTTP, against `comet-relay serve` in its own process."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"
WRITE = {"Authorization": "Bearer key-acme-write"}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("relay")
    config = write_config(
        directory,
        [
            Space(
                "acme",
                keys={"key-acme-write": ["events:write"], "key-acme-read": ["events:read"]},
                extra='custom_events = ["custom_event_3"]',
            ),
            Space("tiny", keys={"key-tiny": ["events:write"]}, extra="rate_limit_per_minute = 3"),
            Space("gone", keys={"key-gone": ["events:write"]}, extra="active = false"),
        ],
        relay_extra="max_body_bytes = 2048",
    )
    with RelayProcess(config) as proc:
        yield proc


@pytest.fixture
def client(relay: RelayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay.url, timeout=10) as c:
        yield c


def stored(relay: RelayProcess, key: str) -> list[dict[str, object]]:
    """The payloads queued under an idempotency key, read straight from the SQLite file."""
    db = sqlite3.connect(relay.config.parent / "relay.db")
    try:
        rows = db.execute("SELECT payload FROM outbox WHERE idempotency_key = ?", (key,)).fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


def test_accepts_a_valid_event_and_stores_it_as_sent(relay: RelayProcess, client: httpx.Client) -> None:
    event = {"event_name": "purchase", "email": "a@b.co", "amount": 49.5, "idempotency_key": "k-1"}
    r = client.post(PATH, json=event, headers=WRITE)
    assert r.status_code == 202
    assert r.json() == {
        "status": 202, "message": "Event accepted and queued for processing.", "outcome": "accepted"
    }
    assert r.headers["Idempotency-Key"] == "k-1"
    assert "Idempotent-Replayed" not in r.headers
    assert int(r.headers["X-RateLimit-Limit"]) == 1000
    assert 0 <= int(r.headers["X-RateLimit-Remaining"]) < 1000
    assert stored(relay, "k-1") == [event]


def test_assigns_an_idempotency_key_when_none_is_sent(relay: RelayProcess, client: httpx.Client) -> None:
    r = client.post(PATH, json={"event_name": "lead_generated", "email": "x@y.z"}, headers=WRITE)
    assert r.status_code == 202
    key = r.headers["Idempotency-Key"]
    assert len(key) >= 16
    assert stored(relay, key) == [{"event_name": "lead_generated", "email": "x@y.z", "idempotency_key": key}]


def test_nulls_count_as_absent(relay: RelayProcess, client: httpx.Client) -> None:
    event = {"event_name": "contact", "email": "n@u.ll", "amount": None, "idempotency_key": "k-null"}
    assert client.post(PATH, json=event, headers=WRITE).status_code == 202
    assert stored(relay, "k-null") == [{"event_name": "contact", "email": "n@u.ll", "idempotency_key": "k-null"}]


def test_a_duplicate_idempotency_key_is_202_says_so_and_is_not_queued(
    relay: RelayProcess, client: httpx.Client
) -> None:
    event = {"event_name": "purchase", "email": "a@b.co", "idempotency_key": "dup-1"}
    first = client.post(PATH, json=event, headers=WRITE)
    second = client.post(PATH, json={**event, "amount": 3}, headers=WRITE)
    assert first.status_code == second.status_code == 202
    assert first.json()["outcome"] == "accepted"
    assert second.json()["outcome"] == "duplicate" and second.json()["duplicate_of"] == "dup-1"
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(stored(relay, "dup-1")) == 1


def test_duplicate_order_id_dedups_per_event_name(relay: RelayProcess, client: httpx.Client) -> None:
    base = {"email": "o@r.d", "order_id": "order-77"}
    a = client.post(PATH, json={**base, "event_name": "purchase", "idempotency_key": "o-1"}, headers=WRITE)
    b = client.post(PATH, json={**base, "event_name": "purchase", "idempotency_key": "o-2"}, headers=WRITE)
    c = client.post(PATH, json={**base, "event_name": "add_to_cart", "idempotency_key": "o-3"}, headers=WRITE)
    assert (a.status_code, b.status_code, c.status_code) == (202, 202, 202)
    assert "Idempotent-Replayed" not in a.headers
    assert b.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in c.headers
    assert [len(stored(relay, k)) for k in ("o-1", "o-2", "o-3")] == [1, 0, 1]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic a2V5"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer nope"}],
    ids=["missing", "other-scheme", "empty", "unknown"],
)
def test_401_is_the_same_for_every_kind_of_bad_key(client: httpx.Client, headers: dict[str, str]) -> None:
    r = client.post(PATH, json={"event_name": "purchase", "email": "a@b.co"}, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"message": client.post(PATH, json={}).json()["message"]}
    assert "Authorization: Bearer" in r.json()["message"]
    assert "X-RateLimit-Limit" in r.headers and "X-RateLimit-Remaining" in r.headers


def test_403_for_a_key_without_permission_and_for_an_inactive_space(client: httpx.Client) -> None:
    event = {"event_name": "purchase", "email": "a@b.co"}
    r = client.post(PATH, json=event, headers={"Authorization": "Bearer key-acme-read"})
    assert r.status_code == 403 and "events:write" in r.json()["message"]
    r = client.post(PATH, json=event, headers={"Authorization": "Bearer key-gone"})
    assert r.status_code == 403 and "inactive" in r.json()["message"]
    assert r.headers["X-RateLimit-Limit"] == "1000"


def test_429_with_retry_after_once_the_space_limit_is_spent(client: httpx.Client) -> None:
    headers = {"Authorization": "Bearer key-tiny"}
    answers = [client.post(PATH, json={"event_name": "contact", "email": "t@i.ny"}, headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[3]
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert "3 requests per minute" in refused.json()["message"]
    # The limit is checked before the size and the body: an oversized body still gets 429.
    big = client.post(PATH, content=b"x" * 5000, headers=headers)
    assert big.status_code == 429


def test_413_by_content_length_and_by_a_chunked_stream(client: httpx.Client) -> None:
    big = json.dumps({"event_name": "purchase", "email": "a@b.co", "order_name": "x" * 3000})
    r = client.post(PATH, content=big, headers=WRITE)
    assert r.status_code == 413 and "2048 bytes" in r.json()["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    r = client.post(PATH, content=chunks(), headers=WRITE)
    assert r.status_code == 413


def test_auth_comes_before_size(client: httpx.Client) -> None:
    assert client.post(PATH, content=b"x" * 5000).status_code == 401


def test_422_lists_every_problem_per_field(client: httpx.Client) -> None:
    r = client.post(
        PATH,
        json={"event_name": "bought", "fingerprint": "fp", "amount": "49", "value": 49},
        headers=WRITE,
    )
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"message", "errors"}
    assert {"event_name", "ip", "amount", "value"} <= set(body["errors"])
    assert any("amount" in m for m in body["errors"]["value"])


def test_422_for_a_body_that_is_not_a_json_object(client: httpx.Client) -> None:
    for raw in (b"not json", b"[1, 2]", b"\xff\xfe"):
        r = client.post(PATH, content=raw, headers=WRITE)
        assert r.status_code == 422, raw
        assert r.json()["message"]


def test_milliseconds_event_time_is_explained(client: httpx.Client) -> None:
    r = client.post(PATH, json={"event_name": "purchase", "email": "a@b.co", "event_time": 1_700_000_000_000}, headers=WRITE)
    assert r.status_code == 422
    assert "milliseconds" in " ".join(r.json()["errors"]["event_time"])


def test_configured_custom_event_only(client: httpx.Client) -> None:
    ok = client.post(PATH, json={"event_name": "custom_event_3", "email": "a@b.co"}, headers=WRITE)
    no = client.post(PATH, json={"event_name": "custom_event_4", "email": "a@b.co"}, headers=WRITE)
    assert ok.status_code == 202 and no.status_code == 422


def test_healthz_reports_queue_depth(client: httpx.Client) -> None:
    before = client.get("/healthz").json()
    client.post(PATH, json={"event_name": "schedule", "email": "h@e.al"}, headers=WRITE)
    after = client.get("/healthz").json()
    assert after["status"] == "ok"
    assert after["queued"] == before["queued"] + 1


def test_openapi_describes_the_endpoint(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"][PATH]["post"]
    assert {"202", "401", "403", "413", "422", "429"} <= set(op["responses"])


def test_unknown_routes_answer_json(client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and "message" in r.json()
    assert client.get(PATH).status_code == 405
