"""A sender that hangs up mid-body gets a quiet 4xx, not a 500 with a traceback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from relay.app import create_app
from relay.settings import load
from tests.support import write_config


def test_a_client_disconnect_mid_body_is_not_a_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(load(str(write_config(tmp_path)), os.environ), forward=False)
    messages = [
        {"type": "http.request", "body": b'{"event_name": "pur', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/public-api/v1/events/track", "raw_path": b"",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "headers": [(b"authorization", b"Bearer key-acme-write"), (b"host", b"relay")],
    }

    async def scenario() -> None:
        await app.state.outbox.start()
        try:
            await app(scope, receive, send)
        finally:
            await app.state.outbox.close()

    asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
