"""How each upstream answer is classified, and the backoff schedule (no network, no sleeping)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from relay.delivery.space_state import backoff
from relay.delivery.upstream import Upstream, Verdict, classify, retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, Verdict.DELIVERED), (202, Verdict.DELIVERED), (204, Verdict.DELIVERED),
     (429, Verdict.SLOW_DOWN), (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY),
     (408, Verdict.RETRY), (401, Verdict.PAUSE), (403, Verdict.PAUSE),
     (400, Verdict.FATAL), (404, Verdict.FATAL), (413, Verdict.FATAL), (422, Verdict.FATAL)],
)
def test_each_status_has_its_outcome(status: int, kind: Verdict) -> None:
    assert classify(status, {}, b"", NOW).verdict is kind


def test_fatal_keeps_the_upstreams_message_and_errors() -> None:
    body = b'{"message": "Validation failed", "errors": {"email": ["bad"]}}'
    out = classify(422, {}, body, NOW)
    assert out.status == 422
    assert out.message.startswith("Validation failed") and '"email"' in out.message
    assert len(classify(400, {}, b"x" * 10_000, NOW).message) <= 500


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), ("-3", 0.0), (None, 60.0), ("soon", 60.0), ("99999", 3600.0),
     (format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True), 42.0)],
)
def test_retry_after_takes_seconds_or_an_http_date(header: str | None, seconds: float) -> None:
    assert retry_after(header, NOW) == pytest.approx(seconds, abs=1)
    if header is not None:
        assert classify(429, {"retry-after": header}, b"", NOW).delay == pytest.approx(seconds, abs=1)


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, ceiling in [(0, 1), (1, 2), (3, 8), (8, 256), (9, 300), (40, 300)]:
        samples = [backoff(attempts, rng) for _ in range(2000)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.9  # the whole range is used: full jitter
        assert sum(samples) / len(samples) == pytest.approx(ceiling / 2, rel=0.1)


def _send_through(handler: httpx.MockTransport) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(transport=handler) as client:
            return await Upstream(client, timeout=1.0).send("http://up.test/track", "tok", b"{}", NOW)

    return asyncio.run(go())


def test_timeouts_and_resets_are_retried_and_the_token_is_sent() -> None:
    seen: list[str | None] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(202, json={"status": 202})

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed", request=request)

    assert _send_through(httpx.MockTransport(ok)).verdict is Verdict.DELIVERED  # type: ignore[attr-defined]
    assert seen == ["Bearer tok"]
    assert _send_through(httpx.MockTransport(slow)).verdict is Verdict.RETRY  # type: ignore[attr-defined]
    out = _send_through(httpx.MockTransport(reset))
    assert out.verdict is Verdict.RETRY and "RemoteProtocolError" in out.message  # type: ignore[attr-defined]


def test_an_upstream_that_echoes_the_token_never_gets_it_into_the_message() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        return httpx.Response(401, json={"status": 401, "message": f"key {token} is revoked"})

    out = _send_through(httpx.MockTransport(echo))
    assert out.verdict is Verdict.PAUSE  # type: ignore[attr-defined]
    assert out.message == "key [the upstream token] is revoked"  # type: ignore[attr-defined]


def test_a_short_answer_is_read_once_and_a_long_one_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream answers most events with the same bytes: the forwarder reads them once.
    A long answer is not kept."""
    reads: list[bytes] = []
    loads = json.loads

    def counted(body: bytes) -> object:
        reads.append(body)
        return loads(body)

    monkeypatch.setattr("relay.delivery.upstream.json.loads", counted)
    short = b'{"status": 202, "message": "queued, read once"}'
    long = b'{"message": "' + b"x" * 600 + b'"}'
    for _ in range(3):
        assert classify(202, {}, short, NOW).message == "queued, read once"
        assert classify(422, {}, long, NOW).message == "x" * 500
    assert reads == [short, long, long, long]
