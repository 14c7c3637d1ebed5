"""The event log: one line per notable event, with its ids, as text or as JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from pathlib import Path

import httpx
import pytest

from relay.app import create_app
from relay.errors import ConfigError
from relay.observe.eventlog import configure_event_log, log
from relay.settings import load
from tests.support import write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}


def run(tmp_path: Path, log_format: str) -> str:
    config = write_config(tmp_path, relay_extra=f'log_format = "{log_format}"')
    app = create_app(load(str(config), os.environ), forward=False)
    out = io.StringIO()
    configure_event_log(app.state.settings.log_format, out)

    async def scenario() -> None:
        await app.state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
                one = {"event_name": "purchase", "email": "a@b.c", "idempotency_key": "k-1"}
                await c.post(PATH, json=one, headers=KEY)  # accepted: no line
                await c.post(PATH, json=one, headers=KEY)  # duplicate
                await c.post(PATH, json={**one, "amount": "x", "idempotency_key": "k-2"}, headers=KEY)
        finally:
            await app.state.outbox.close()

    asyncio.run(scenario())
    return out.getvalue()


@pytest.fixture(autouse=True)
def restore_event_log() -> object:
    yield
    configure_event_log("text")


def test_json_lines_carry_the_ids_and_the_outcome(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in run(tmp_path, "json").splitlines()]
    assert [(x["outcome"], x["event_id"], x["space"]) for x in lines] == [
        ("duplicate", "k-1", "acme"),
        ("rejected", None, "acme"),
    ]
    assert lines[1]["reason"] == "amount" and lines[1]["source"] == "api"
    assert lines[0]["logger"] == "relay.events" and lines[0]["level"] == "info"


def test_text_lines_by_default(tmp_path: Path) -> None:
    text = run(tmp_path, "text")
    assert "duplicate api event k-1 of Space acme" in text
    assert "refused api event - of Space acme: amount" in text
    assert log.level == logging.INFO


def test_log_format_is_checked(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra='log_format = "xml"')
    with pytest.raises(ConfigError, match='log_format: must be "text" or "json"'):
        load(str(config), os.environ)
