"""The debugger's journal (a bounded ring, per-minute counts) and its routes' guards."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from relay.app import create_app
from relay.errors import ConfigError
from relay.observe.journal import Journal
from relay.settings import load
from tests.support import write_config

TOKEN = "admin-token-0123456789abcdef"


def test_the_ring_is_bounded_and_search_finds_every_sighting_of_a_key() -> None:
    journal = Journal(size=3)
    journal.add(60.0, "acme", "browser", "queued", "k-1")
    journal.add(61.0, "acme", "api", "duplicate", "k-1")
    journal.add(62.0, "acme", "forwarder", "delivered", "k-1", status=202, outbox_id=9)
    journal.add(130.0, "acme", "api", "refused", None, reason="email")
    assert [s.seq for s in journal.ring] == [2, 3, 4]  # the oldest fell out
    assert [s.stage for s in journal.find("k-1")] == ["duplicate", "delivered"]
    assert [s.stage for s in journal.find("9")] == ["delivered"]
    assert [s.seq for s in journal.since(2)] == [3, 4]
    journal.depth(135.0, 7)
    rows = journal.chart(150.0)
    assert len(rows) == 60 and rows[-1] == {"minute": 120, "received": 1, "delivered": 0, "depth": 7}
    assert rows[-2] == {"minute": 60, "received": 2, "delivered": 1, "depth": -1}


def test_followers_wake_on_a_new_sighting_and_on_close() -> None:
    async def scenario() -> None:
        journal = Journal()
        waiting = asyncio.create_task(journal.wait(0, 30))
        await asyncio.sleep(0)
        journal.add(1.0, "acme", "api", "queued", "k")
        await asyncio.wait_for(waiting, 5)
        waiting = asyncio.create_task(journal.wait(1, 30))
        await asyncio.sleep(0)
        journal.close()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())


def get(app: object, url: str, **kw: object) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
            return await c.get(url, **kw)  # type: ignore[arg-type]

    return asyncio.run(call())


def test_debug_is_404_without_an_admin_token_and_401_without_the_token(tmp_path: Path) -> None:
    off = create_app(load(str(write_config(tmp_path)), os.environ), forward=False)
    assert get(off, "/debug").status_code == 404
    assert get(off, "/debug/events").status_code == 404

    config = write_config(tmp_path, relay_extra='admin_token_env = "COMET_ADMIN"')
    on = create_app(load(str(config), {**os.environ, "COMET_ADMIN": TOKEN}), forward=False)
    assert get(on, "/debug").status_code == 401
    assert get(on, "/debug", headers={"Authorization": "Bearer nope"}).status_code == 401
    page = get(on, "/debug", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "comet-relay debugger" in page.text
    signed_in = get(on, f"/debug?token={TOKEN}")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "http://relay/debug"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie


def test_admin_token_env_must_name_a_long_enough_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra='admin_token_env = "COMET_ADMIN"')
    with pytest.raises(ConfigError, match=r"\$COMET_ADMIN must hold a token of at least 16"):
        load(str(config), {"COMET_ADMIN": "short"})
    assert load(str(config), {}, secrets=False).admin_token is None
