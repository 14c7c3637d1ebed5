"""Fixtures for the e2e tests: real Chromium, the test site on its own origin, and for each test
a real relay process that forwards to a real fake upstream process.

Origins: the site is http://localhost:SITE and the relay http://localhost:RELAY. Another port
is another origin (so the relay's Origin check and CORS are exercised), but the same site, so
the relay's SameSite=Lax visitor cookie travels with the snippet's requests as it does for a
relay on a subdomain of the shop. http://127.0.0.1:SITE is the foreign origin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from e2e.site import Site
from tests.fake_upstream import events
from tests.support import RelayProcess, Space, UpstreamProcess, missing, wait_for, write_config

T = TypeVar("T")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SITE_KEY = "pk_acme"
TAG = f'data-key="{SITE_KEY}"'
ADMIN_TOKEN = "admin-token-0123456789abcdef"
TOKEN_ENV = {"ACME_TOKEN": "upstream-secret-token", "COMET_ADMIN_TOKEN": ADMIN_TOKEN}
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def chromium_executable() -> str | None:
    """$CHROMIUM, else /usr/bin/chromium, else None: Playwright's own browser."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


FRONTEND = Path(__file__).resolve().parent / "frontend"


@pytest.fixture(scope="session")
def frontend() -> Path:
    """e2e/frontend/node_modules: the real front-end packages of the SPA, form and Partytown
    pages, at the versions of e2e/frontend/package-lock.json, installed with `npm ci` from the
    npm registry when the lockfile changed since the last install (as scripts/build-snippet
    does for its tools). Skipped without npm, which CI turns into a failure."""
    modules = FRONTEND / "node_modules"
    lock = FRONTEND / "package-lock.json"
    stamp = modules / ".installed-lock"
    if stamp.is_file() and stamp.read_bytes() == lock.read_bytes():
        return modules
    if shutil.which("npm") is None:
        missing("the front-end test pages need npm to install their packages")
    install = subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, f"npm ci in e2e/frontend failed:\n{install.stderr}"
    stamp.write_bytes(lock.read_bytes())
    return modules


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    site = Site().start()
    yield site
    site.stop()


class Stack:
    """One test's relay, its upstream and the site, with helpers to read what arrived."""

    def __init__(self, relay: RelayProcess, upstream: UpstreamProcess, site: Site) -> None:
        self.relay = relay
        self.upstream = upstream
        self.site = site
        self.relay_origin = f"http://localhost:{relay.port}"

    def tag(self, attributes: str) -> None:
        """Give the snippet's tag in every page these extra attributes."""
        self.site.rewrites[TAG] = f"{TAG} {attributes}"

    def url(self, page: str, host: str = "localhost", **query: str) -> str:
        return f"{self.site.origin(host)}/{page}" + (f"?{urlencode(query)}" if query else "")

    def events(self) -> list[dict[str, Any]]:
        """The events the upstream accepted so far, as it received them."""
        return events(self.upstream.received(), 202)

    def wait_events(
        self, check: Callable[[dict[str, Any]], bool], n: int = 1, what: str = "events"
    ) -> list[dict[str, Any]]:
        """Poll the upstream until at least `n` received events satisfy `check`; those events."""

        def found() -> list[dict[str, Any]] | None:
            matching = [e for e in self.events() if check(e)]
            return matching if len(matching) >= n else None

        return wait_for(found, 20, what)

    def with_key(self, key: str) -> list[dict[str, Any]]:
        """Poll until the event whose idempotency key is `key` has arrived; all such events."""
        return self.wait_events(lambda e: e.get("idempotency_key") == key, what=f"event {key}")

    def sentinel(self, page: Page, url: str) -> None:
        """Open `url` in `page` (an allowed page) and wait until its page view is upstream.

        For asserting that something did not arrive: whatever the relay had queued before the
        sentinel's page view (page views are the last to be delivered) has been delivered by
        the time the sentinel is.
        """
        page.goto(url)
        self.wait_events(
            lambda e: e["event_name"] == "view_content" and e["url"] == url,
            what=f"the sentinel page view of {url}",
        )


@pytest.fixture
def stack(tmp_path: Path, site: Site, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The site, a relay and the fake upstream. Conversions are not held for their twin
    unless the test is marked `@pytest.mark.twin_window(seconds)`."""
    marker = request.node.get_closest_marker("twin_window")
    window = marker.args[0] if marker is not None else 0
    with UpstreamProcess(tmp_path) as upstream:
        config = write_config(
            tmp_path,
            relay_extra=(
                "upstream_timeout_seconds = 2\nbrowser_rate_limit_per_minute = 100000\n"
                'admin_token_env = "COMET_ADMIN_TOKEN"'
            ),
            spaces=[
                Space(
                    twin_window=window,
                    extra=(
                        f'upstream_url = "{upstream.track_url}"\n'
                        'upstream_token_env = "ACME_TOKEN"\n'
                        "upstream_rate_per_minute = 60000\n"
                        "rate_limit_per_minute = 100000\n"
                        'custom_events = ["custom_event_3"]\n'
                    ),
                )
            ],
        )
        # write_config allows https://acme.example only; this Space is the test site's
        text = config.read_text()
        allowed = 'allowed_origins = ["https://acme.example"]'
        assert allowed in text
        config.write_text(text.replace(allowed, f'allowed_origins = ["{site.origin()}"]'))
        with RelayProcess(config, env=TOKEN_ENV) as relay:
            stack = Stack(relay, upstream, site)
            site.relay = stack.relay_origin
            site.rewrites = {}
            site.headers = {}
            yield stack


class Wire:
    """Every batch the snippet posted in a browser context: the request and its events."""

    def __init__(self, context: BrowserContext) -> None:
        self.requests: list[Request] = []
        context.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.method == "POST" and "/e?" in request.url:
            self.requests.append(request)

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in json.loads(r.post_data or "{}").get("e", [])]

    def ids(self, name: str | None = None) -> list[str]:
        return [e["event_id"] for e in self.events() if name is None or e["event_name"] == name]


FBEVENTS = Path(__file__).resolve().parent / "pages" / "fbevents.js"


class Browsing:
    """A fresh browser context (cookies, storage) with its wire log and the page errors seen.

    Meta's fbevents.js, which the pixel's base code loads from connect.facebook.net, is
    answered with the local stand-in e2e/pages/fbevents.js (this machine has no Internet).
    """

    def __init__(self, browser: Browser, **options: Any) -> None:
        self.context = browser.new_context(**options)
        self.context.route(
            "https://connect.facebook.net/**",
            lambda route: route.fulfill(
                body=FBEVENTS.read_text(),
                content_type="application/javascript",
                headers={"Access-Control-Allow-Origin": "*"},  # as Meta's (Partytown fetches it)
            ),
        )
        self.wire = Wire(self.context)
        self.errors: list[str] = []
        self.page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browsing(browser: Browser) -> Iterator[Callable[..., Browsing]]:
    """browsing(**context_options) -> a Browsing; every page error fails the test."""
    opened: list[Browsing] = []

    def open_(**options: Any) -> Browsing:
        opened.append(Browsing(browser, **options))
        return opened[-1]

    yield open_
    errors = [e for b in opened for e in b.errors]
    for b in opened:
        b.close()
    assert errors == [], f"the page threw: {errors}"


def until(page: Page, check: Callable[[], T | None], timeout: float = 15.0, what: str = "it") -> T:
    """Poll `check` while letting Playwright deliver its events (routes, requests) meanwhile."""
    waited = 0.0
    while True:
        value = check()
        if value:
            return value
        if waited > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(25)
        waited += 0.025


def loaded(page: Page) -> None:
    """Wait until the snippet has replaced the stub window.comet."""
    page.wait_for_function("window.comet && window.comet.loaded === true", timeout=15000)
