"""GET /readyz: the store answers, and each Space's upstream is answering or paused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from relay.app import create_app
from relay.errors import Unavailable
from relay.settings import load
from relay.store.base import OutboxStats
from tests.support import RelayProcess, Space, UpstreamProcess, wait_for, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}


class UnreachableStore:
    """An outbox whose storage stopped answering after start-up."""

    def __init__(self, outbox: object) -> None:
        self.outbox = outbox

    def __getattr__(self, name: str) -> object:
        return getattr(self.outbox, name)

    async def stats(self) -> OutboxStats:
        raise Unavailable("database is locked")


def readyz(app: object) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
            return await c.get("/readyz")

    return asyncio.run(get())


def test_readyz_is_503_when_the_store_does_not_answer(tmp_path: Path) -> None:
    settings = load(str(write_config(tmp_path)), os.environ)
    ok = create_app(settings, forward=False)
    asyncio.run(ok.state.outbox.start())
    r = readyz(ok)
    assert r.status_code == 200
    assert r.json()["spaces"]["acme"] == {"queued": 0, "dead": 0, "upstream": "not forwarded"}
    broken = create_app(settings, outbox=UnreachableStore(ok.state.outbox), forward=False)  # type: ignore[arg-type]
    r = readyz(broken)
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    asyncio.run(ok.state.outbox.close())


def test_readyz_shows_a_space_paused_by_401_then_answering_again(tmp_path: Path) -> None:
    with UpstreamProcess(tmp_path) as upstream:
        upstream.control(default={"status": 401, "message": "bad token"})
        config = write_config(tmp_path, relay_extra="upstream_timeout_seconds = 2", spaces=[Space(
            extra=f'upstream_url = "{upstream.track_url}"\nupstream_token_env = "ACME_TOKEN"\n'
        )])
        with RelayProcess(config, env={"ACME_TOKEN": "t"}) as relay, httpx.Client(base_url=relay.url) as c:
            assert c.get("/readyz").json()["spaces"]["acme"]["upstream"] == "answering"
            event = {"event_name": "purchase", "email": "a@b.c"}
            assert c.post(PATH, json=event, headers=KEY).status_code == 202

            def space() -> dict[str, object]:
                r = c.get("/readyz")
                assert r.status_code == 200
                return dict(r.json()["spaces"]["acme"])

            paused = wait_for(lambda: (s := space())["upstream"] == "paused" and s, 10, "a pause")
            assert paused["queued"] == 1 and float(paused["paused_until"]) > 0  # type: ignore[arg-type]
            upstream.control(default={"status": 202})
            wait_for(lambda: space() == {"queued": 0, "dead": 0, "upstream": "answering"}, 20,
                     "delivery after the pause")
