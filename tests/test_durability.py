"""Accept means durable: no 202 before the commit is on disk, a 503 (nothing accepted) when
the store fails, and a SIGKILL right after a burst of 202s loses none of them."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from relay.app import create_app
from relay.cli.serve import server_options
from relay.errors import Unavailable
from relay.rules.events import NewEvent
from relay.settings import load
from relay.store.base import Enqueued
from relay.store.sqlite import SQLiteOutbox
from tests.support import RelayProcess, Space, free_port, write_config
from tests.test_browser_http import CHROME, ORIGIN
from tests.test_metrics import received, samples

PATH = "/public-api/v1/events/track"
HEADERS = {"Authorization": "Bearer key-acme-write"}
BROWSER = {"Origin": ORIGIN, "User-Agent": CHROME, "Content-Type": "text/plain;charset=UTF-8"}
HELD = 1.0  # seconds the commit is held back once the event has reached the store


def request(door: str, key: str) -> tuple[str, dict[str, str], bytes]:
    """A request of one event with idempotency key (or event id) `key` through `door`, the
    Create Event API ("api") or the browser's endpoint ("browser")."""
    if door == "api":
        event = {"event_name": "purchase", "email": "a@b.co", "idempotency_key": key}
        return PATH, HEADERS, json.dumps(event).encode()
    event = {"event_name": "purchase", "event_id": key, "url": f"{ORIGIN}/thanks"}
    return "/e?k=pk_acme", BROWSER, json.dumps({"e": [event]}).encode()


def stored_keys(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT idempotency_key FROM outbox")}
    finally:
        conn.close()


class Watched(SQLiteOutbox):
    """The SQLite outbox, telling when an enqueue has reached it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reached = asyncio.Event()

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Enqueued]:
        self.reached.set()
        return await super().enqueue(events, now)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """`app` served by uvicorn as `comet-relay serve` runs it, on a loopback socket, in this
    event loop (so the test can hold the outbox's commit back): its URL."""
    port = free_port()
    options = {**server_options(app.state.settings, "127.0.0.1", port), "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("door", ["api", "browser"])
def test_no_202_arrives_before_the_commit_is_on_disk(tmp_path: Path, door: str) -> None:
    settings = load(str(write_config(tmp_path)), os.environ)
    outbox = Watched(settings.database)
    app = create_app(settings, outbox=outbox, forward=False)
    db = tmp_path / "relay.db"
    path, headers, body = request(door, f"held-{door}")

    async def scenario() -> tuple[httpx.Response, set[str], set[str]]:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            # Another connection takes SQLite's write lock: the outbox's writer thread waits
            # for it (up to its busy timeout, 10 s), so its commit cannot happen meanwhile.
            lock = sqlite3.connect(db, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")
                answer = asyncio.ensure_future(client.post(path, content=body, headers=headers))
                await asyncio.wait_for(outbox.reached.wait(), 30)
                done, _ = await asyncio.wait([answer], timeout=HELD)
                assert not done, f"answered while the commit was held: {answer.result()}"
                while_held = stored_keys(db)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            response = await asyncio.wait_for(answer, 30)
            return response, while_held, stored_keys(db)

    response, while_held, after = asyncio.run(scenario())
    assert f"held-{door}" not in while_held
    assert response.status_code == 202, response.text
    assert f"held-{door}" in after  # committed before the answer was sent


class FailingStore(SQLiteOutbox):
    """An outbox that starts, reads and counts, but cannot write an event."""

    async def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Enqueued]:
        raise Unavailable("The outbox could not write: disk I/O error")


def test_a_store_that_cannot_write_is_a_503_on_both_doors_counted_unavailable(
    tmp_path: Path,
) -> None:
    settings = load(str(write_config(tmp_path)), os.environ)
    app = create_app(settings, outbox=FailingStore(settings.database), forward=False)

    async def scenario() -> tuple[httpx.Response, httpx.Response, str]:
        await app.state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
                path, headers, body = request("api", "store-down-api")
                api = await c.post(path, content=body, headers=headers)
                path, headers, body = request("browser", "store-down-browser")
                browser = await c.post(path, content=body, headers=headers)
                scrape = await c.get("/metrics")
        finally:
            await app.state.outbox.close()
        return api, browser, scrape.text

    api, browser, text = asyncio.run(scenario())
    for answer in (api, browser):
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["message"].startswith("Nothing was accepted"), answer.text
        assert "retry" in answer.json()["message"]
    assert browser.headers["access-control-allow-origin"] == ORIGIN  # the snippet reads it
    assert stored_keys(tmp_path / "relay.db") == set()
    seen = samples(text)
    for source in ("api", "browser"):
        assert received(seen, source, "rejected", "unavailable") == 1, source
        assert received(seen, source, "accepted") == 0, source


async def burst(relay: RelayProcess, kill_after: int, in_flight: int = 50) -> list[str]:
    """Keep `in_flight` requests under way, one event each, until `kill_after` are
    acknowledged; then SIGKILL the relay. Returns every acknowledged key, including 202s
    that arrive after the kill (each was answered before the process died).

    Each sender waits for its answer before its next request, so no request waits for a
    connection, and a loaded machine only makes the burst slower: a request that fails
    before the kill fails the test, one that fails after it is one the relay never
    acknowledged.
    """
    acked: list[str] = []
    numbers = iter(range(10 * kill_after))
    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(base_url=relay.url, limits=limits, timeout=120) as client:

        async def sender() -> None:
            for i in numbers:
                key = f"burst-{i}"
                event = {"event_name": "purchase", "email": f"u{i}@shop.test", "idempotency_key": key}
                try:
                    r = await client.post(PATH, json=event, headers=HEADERS)
                except httpx.TransportError:
                    assert relay.proc is not None and relay.proc.poll() is not None
                    return  # killed while this request was under way: not acknowledged
                assert r.status_code == 202, r.text
                acked.append(key)
                if len(acked) == kill_after:
                    relay.kill()

        await asyncio.gather(*(sender() for _ in range(in_flight)))
    return acked


def test_sigkill_after_a_burst_loses_no_acknowledged_event(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space(extra="rate_limit_per_minute = 100000")])
    relay = RelayProcess(config).start(timeout=60)
    try:
        acked = asyncio.run(burst(relay, kill_after=300))
    finally:
        relay.kill()
    assert len(acked) >= 300
    assert relay.proc is not None and relay.proc.returncode == -9

    # A new process on the same file starts, and every acknowledged event is in its outbox.
    again = RelayProcess(config).start(timeout=60)
    try:
        queued = httpx.get(f"{again.url}/healthz", timeout=30).json()["queued"]
    finally:
        again.stop()
    missing = set(acked) - stored_keys(tmp_path / "relay.db")
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert queued >= len(acked)
