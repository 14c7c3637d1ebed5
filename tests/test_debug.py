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
    assert get(on, f"/debug?token={TOKEN}").status_code == 401  # never from a URL


def request(app: object, method: str, url: str, **kw: object) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
            return await c.request(method, url, **kw)  # type: ignore[arg-type]

    return asyncio.run(call())


def debugger(tmp_path: Path, clock: list[float] | None = None) -> object:
    config = write_config(tmp_path, relay_extra='admin_token_env = "COMET_ADMIN"')
    settings = load(str(config), {**os.environ, "COMET_ADMIN": TOKEN})
    if clock is None:
        return create_app(settings, forward=False)
    return create_app(settings, forward=False, clock=lambda: clock[0])


SAME = {"Origin": "http://relay"}


def test_the_login_is_a_form_post_that_sets_a_random_expiring_session(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    app = debugger(tmp_path, now)
    form = get(app, "/debug")
    assert form.status_code == 401 and 'action="debug/login"' in form.text
    assert 'type="password"' in form.text
    wrong = request(app, "POST", "/debug/login", data={"token": "nope"}, headers=SAME)
    assert wrong.status_code == 401 and "not the admin token" in wrong.text
    forged = request(app, "POST", "/debug/login", data={"token": TOKEN},
                     headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403  # a login form on another site cannot sign anyone in
    first = request(app, "POST", "/debug/login", data={"token": TOKEN}, headers=SAME)
    second = request(app, "POST", "/debug/login", data={"token": TOKEN}, headers=SAME)
    assert first.status_code == 303 and first.headers["location"] == "/debug"  # relative
    one, two = (r.cookies["comet_admin"] for r in (first, second))
    assert one != two and TOKEN not in one  # random, not derived from the token alone
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert get(app, "/debug", headers={"Cookie": f"comet_admin={one}"}).status_code == 200
    tampered = one[:-1] + ("0" if one[-1] != "0" else "1")
    assert get(app, "/debug", headers={"Cookie": f"comet_admin={tampered}"}).status_code == 401
    now[0] += 8 * 3600 + 1  # the session has run out
    assert get(app, "/debug", headers={"Cookie": f"comet_admin={one}"}).status_code == 401


def test_malformed_tokens_and_ids_are_refused_never_a_500(tmp_path: Path) -> None:
    app = debugger(tmp_path)
    for headers in ({"Authorization": "Bearer ²".encode()}, {"Authorization": b"Bearer \xff\xfe"}):
        assert get(app, "/debug", headers=headers).status_code == 401
    for cookie in ("²", "1.2.3", "99999999999999999999.x.y", "ü.ü.ü", "..", ""):
        raw = {"Cookie": f"comet_admin={cookie}".encode()}
        assert get(app, "/debug", headers=raw).status_code == 401
    assert request(app, "POST", "/debug/login", data={"token": "²"}, headers=SAME).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert get(app, "/debug/search", params={"q": "k" * 300}, headers=bearer).status_code == 400
    replay = request(app, "POST", "/debug/replay/" + "9" * 30, headers=bearer)
    assert replay.status_code == 404


def test_a_malformed_last_event_id_resumes_from_the_recent_sightings(tmp_path: Path) -> None:
    from relay.routes.debug import Debugger  # the handler alone: a stream never ends by itself

    journal = Journal()
    journal.add(1.0, "acme", "api", "queued", "k")
    debug = Debugger(TOKEN, journal, object(), None, lambda: 2.0)  # type: ignore[arg-type]

    async def first_chunks(last: str) -> str:
        scope = {"type": "http", "method": "GET", "path": "/debug/events", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {TOKEN}".encode()),
                             (b"last-event-id", last.encode())]}
        from starlette.requests import Request

        response = await debug.events(Request(scope))
        assert response.status_code == 200
        chunks = response.body_iterator  # type: ignore[attr-defined]
        text = "".join([await anext(chunks), await anext(chunks)])
        await chunks.aclose()
        return text

    for last in ("²", "9" * 5000, "-1"):
        assert "id: 1" in asyncio.run(first_chunks(last)), last


def test_admin_token_env_must_name_a_long_enough_token(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra='admin_token_env = "COMET_ADMIN"')
    with pytest.raises(ConfigError, match=r"\$COMET_ADMIN must hold a token of at least 16"):
        load(str(config), {"COMET_ADMIN": "short"})
    assert load(str(config), {}, secrets=False).admin_token is None
