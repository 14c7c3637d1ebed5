"""The Create Event endpoint as a bare ASGI app: what it answers when a part of it fails, and
the methods and paths that do not reach it."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import httpx
import pytest

from relay.app import create_app
from relay.limits.base import Decision
from relay.settings import load
from tests.support import write_config

PATH = "/public-api/v1/events/track"
WRITE = {"Authorization": "Bearer key-acme-write"}
EVENT = {"event_name": "contact", "email": "a@b.co", "idempotency_key": "asgi-1"}


class BrokenLimiter:
    """A limiter with a bug: it raises something that is not a RelayError."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def take(self, key: str, limit_per_minute: int, cost: int = 1) -> Decision:
        raise RuntimeError("a bug in the limiter")

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        raise RuntimeError("a bug in the limiter")


def call(app: object, requests: list[tuple[str, str, dict[str, object] | None]]) -> list[httpx.Response]:
    async def scenario() -> list[httpx.Response]:
        state = app.state  # type: ignore[attr-defined]
        await state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
                return [await client.request(m, p, json=j, headers=WRITE) for m, p, j in requests]
        finally:
            await state.outbox.close()

    return asyncio.run(scenario())


def test_a_bug_behind_the_endpoint_is_a_json_500_and_a_logged_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load(str(write_config(tmp_path)), os.environ)
    app = create_app(settings, limiter=BrokenLimiter(), forward=False)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="relay"):
        (r,) = call(app, [("POST", PATH, EVENT)])
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"message": "Internal error; the event was not accepted."}
    assert "a bug in the limiter" in caplog.text  # the traceback is logged, not sent


def test_other_methods_get_405_and_the_api_answers_json_with_its_headers(tmp_path: Path) -> None:
    app = create_app(load(str(write_config(tmp_path)), os.environ), forward=False)
    get, post, again = call(app, [("GET", PATH, None), ("POST", PATH, EVENT), ("POST", PATH, EVENT)])
    assert get.status_code == 405
    assert post.status_code == 202 and post.headers["content-type"] == "application/json"
    assert int(post.headers["content-length"]) == len(post.content)
    assert post.headers["idempotency-key"] == "asgi-1"
    assert post.headers["x-ratelimit-limit"] == "1000"
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"


def test_a_refusal_is_json_with_the_rate_limit_headers(tmp_path: Path) -> None:
    app = create_app(load(str(write_config(tmp_path)), os.environ), forward=False)
    (r,) = call(app, [("POST", PATH, {"event_name": "contact"})])
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    assert "errors" in r.json() and r.headers["x-ratelimit-remaining"] == "999"
