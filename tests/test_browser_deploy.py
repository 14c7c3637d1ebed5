"""The browser routes as deployed: untrusted proxies, key rotation, forwarding, the embedded
default's demo page, and the relay mounted under a path of another app."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from relay.app import create_app
from relay.auth.visitor import VisitorTokens
from relay.settings import Settings, load
from tests.support import (
    ROOT,
    SECRET,
    RelayProcess,
    Space,
    UpstreamProcess,
    free_port,
    wait_for,
    write_config,
)
from tests.test_api_http import stored
from tests.test_browser_http import CHROME, ORIGIN, post, visitor_cookie, visitor_of


def untrusting_config(directory: Path, relay_extra: str = "") -> Path:
    """A relay.toml whose only trusted proxy is 10.0.0.1: the tests' requests come from elsewhere."""
    config = write_config(directory, relay_extra=relay_extra)
    text = config.read_text().replace(
        'trusted_proxies = ["127.0.0.1"]', 'trusted_proxies = ["10.0.0.1"]'
    )
    config.write_text(text)
    return config


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    with RelayProcess(untrusting_config(tmp_path)) as relay:
        event = {"event_name": "contact", "event_id": "untrusted-1", "fingerprint": "fp"}
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        r = post(relay, [event], headers=headers)
        assert r.json()["accepted"] == 1
        assert stored(relay, "untrusted-1")[0]["ip"] == "127.0.0.1"
        assert not visitor_cookie(r)["_comet"]["secure"]


def test_the_per_ip_limit_answers_429_and_a_forged_address_does_not_dodge_it(
    tmp_path: Path,
) -> None:
    config = untrusting_config(tmp_path, relay_extra="browser_rate_limit_per_minute = 3")
    with RelayProcess(config) as relay:
        answers = [post(relay, [{"event_name": "contact"}]) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 202]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
        refused = post(
            relay, [{"event_name": "contact"}], headers={"X-Forwarded-For": "198.51.100.1"}
        )
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        assert "3 per minute" in refused.json()["message"]
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        # The Origin check comes first: a foreign origin is still told 403, not 429.
        assert post(relay, [], origin="https://evil.example").status_code == 403
        # The API's limit is per Space, not per address: untouched by the browser's.
        api = httpx.post(
            f"{relay.url}/public-api/v1/events/track",
            json={"event_name": "contact", "email": "a@b.co"},
            headers={"Authorization": "Bearer key-acme-write"},
        )
        assert api.status_code == 202


def test_rotating_the_secret_keys_keeps_visitors(tmp_path: Path) -> None:
    newer = "newer-secret-key-0123456789abcdef"
    config = write_config(tmp_path)
    with RelayProcess(config) as before:
        cookie = visitor_cookie(post(before, [{"event_name": "contact"}]))["_comet"].value
    visitor = VisitorTokens([SECRET]).verify(cookie)
    with RelayProcess(config, env={"RELAY_SECRET_KEYS": f"{SECRET},{newer}"}) as after:
        event = {"event_name": "contact", "event_id": "rotated-1"}
        r = post(after, [event], headers={"Cookie": f"_comet={cookie}"})
        assert stored(after, "rotated-1")[0]["comet_token"] == visitor
        refreshed = visitor_cookie(r)["_comet"].value
    assert VisitorTokens([newer]).verify(refreshed) == visitor  # signed with the newest key
    with RelayProcess(config, env={"RELAY_SECRET_KEYS": newer}) as retired:
        old = post(retired, [{"event_name": "contact"}], headers={"Cookie": f"_comet={cookie}"})
        new = post(retired, [{"event_name": "contact"}], headers={"Cookie": f"_comet={refreshed}"})
        only_newer = VisitorTokens([newer])
        fresh = only_newer.verify(visitor_cookie(old)["_comet"].value)
        assert fresh is not None and fresh != visitor  # its key is gone: a new visitor
        assert only_newer.verify(visitor_cookie(new)["_comet"].value) == visitor


def test_browser_events_reach_the_upstream_and_bots_never_do(tmp_path: Path) -> None:
    with UpstreamProcess(tmp_path) as upstream:
        config = write_config(
            tmp_path,
            [
                Space(
                    extra=(
                        f'upstream_url = "{upstream.track_url}"\n'
                        'upstream_token_env = "ACME_TOKEN"\n'
                        "upstream_rate_per_minute = 6000\n"
                    )
                )
            ],
        )
        with RelayProcess(config, env={"ACME_TOKEN": "tok-upstream"}) as relay:
            bot = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
            purchase = {"event_name": "purchase", "amount": 49, "fingerprint": "fp-1"}
            crawled = post(
                relay, [{**purchase, "event_id": "fwd-bot"}], headers={"User-Agent": bot}
            )
            assert crawled.json()["bot"] is True
            r = post(relay, [{**purchase, "event_id": "fwd-human"}])
            assert r.json()["accepted"] == 1

            def delivered() -> list[dict[str, object]]:
                return [json.loads(str(x["body"])) for x in upstream.received()]

            (sent,) = wait_for(delivered, what="the browser event at the upstream")
    assert sent["idempotency_key"] == "fwd-human"
    assert (sent["ip"], sent["user_agent"], sent["fingerprint"]) == ("127.0.0.1", CHROME, "fp-1")
    assert sent["comet_token"] == visitor_of(r)
    assert sent["amount"] == 49 and isinstance(sent["event_time"], int)


# --- the embedded default serves /demo ------------------------------------------------------


class EmbeddedRelay(RelayProcess):
    """`comet-relay serve` with no config: the embedded default, in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        super().__init__(data_dir / "relay.toml", env={**env, "RELAY_DATA_DIR": str(data_dir)})
        self.env.pop("RELAY_CONFIG", None)

    def start(self, timeout: float = 20.0) -> RelayProcess:
        cmd = [sys.executable, "-m", "relay.cli", "serve", "--host", "127.0.0.1"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        wait_for(self._ready, timeout, f"embedded relay on {self.url} (log: {self.log})")
        return self


def test_the_embedded_default_serves_a_working_demo_page(tmp_path: Path) -> None:
    with EmbeddedRelay(tmp_path / "comet-data") as relay:
        site_key = load(str(relay.config), {}).spaces["demo"].site_key
        assert site_key is not None
        page = httpx.get(f"{relay.url}/demo")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "{{" not in html
        assert f'data-key="{site_key}"' in html
        assert f'src="{relay.url}/comet.js"' in html
        assert f'data-endpoint="{relay.url}/e"' in html
        assert "comet('track', 'purchase'" in html or 'comet("track", "purchase"' in html
        # The page's own origin is an allowed origin of the demo Space.
        event = {"event_name": "lead_generated", "event_id": "demo-1"}
        r = post(relay, [event], key=site_key, origin=relay.url)
        assert r.status_code == 202 and r.json()["accepted"] == 1
        assert stored(relay, "demo-1")[0]["comet_token"]


# --- mounted under a path of another app ------------------------------------------------------


class ServedApp:
    """An ASGI app served by uvicorn in a thread, on a free port, without uvicorn's proxy
    handling: whatever the relay honours of X-Forwarded-* is its own doing."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", proxy_headers=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        wait_for(lambda: self.server.started, what="uvicorn in a thread")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[ServedApp, RelayProcess]]:
    config = write_config(tmp_path)
    settings: Settings = dataclasses.replace(load(str(config), {}), demo=True)
    relay = create_app(settings, forward=False)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the host app")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay.router.lifespan_context(relay):  # the host runs the relay's lifespan
            yield

    host = Starlette(
        routes=[Route("/", home), Mount("/relay", app=relay)],
        lifespan=lifespan,
    )
    with ServedApp(host) as served:
        # stored() reads relay.db beside the config; a RelayProcess that is never started
        # carries that path.
        yield served, RelayProcess(config)


def test_mounted_under_a_prefix(mounted: tuple[ServedApp, RelayProcess]) -> None:
    served, files = mounted
    base = f"{served.url}/relay"
    assert httpx.get(f"{served.url}/").text == "the host app"
    event = {"event_name": "purchase", "event_id": "mounted-1", "fingerprint": "fp", "amount": 5}
    r = httpx.post(
        f"{base}/e?k=pk_acme",
        content=json.dumps({"e": [event]}),
        headers={
            "Origin": ORIGIN,
            "Content-Type": "text/plain",
            "User-Agent": CHROME,
            "X-Forwarded-For": "203.0.113.50",
        },
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert r.headers["access-control-allow-origin"] == ORIGIN
    (kept,) = stored(files, "mounted-1")
    assert kept["ip"] == "203.0.113.50"  # the relay's own proxy handling, from a trusted peer
    assert kept["comet_token"] == visitor_of(r)

    snippet = httpx.get(f"{base}/comet.js")
    assert snippet.status_code == 200 and snippet.headers["etag"]
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    demo = httpx.get(f"{base}/demo").text
    assert f'src="{base}/comet.js"' in demo and f'data-endpoint="{base}/e"' in demo
    assert httpx.get(f"{served.url}/e?k=pk_acme").status_code == 404  # nothing at the root

    api = {"event_name": "contact", "email": "m@ou.nt", "idempotency_key": "mounted-api-1"}
    key = {"Authorization": "Bearer key-acme-write"}
    r = httpx.post(f"{base}/public-api/v1/events/track", json=api, headers=key)
    assert r.status_code == 202 and r.headers["Idempotency-Key"] == "mounted-api-1"
    (kept,) = stored(files, "mounted-api-1")
    assert kept["email"] == "m@ou.nt"
    root = httpx.post(f"{served.url}/public-api/v1/events/track", json=api, headers=key)
    assert root.status_code == 404  # the host app's own 404: the relay lives under /relay
