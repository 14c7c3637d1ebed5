"""The debugger page in real Chromium: its token, the live list, search by id, and replay."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import ADMIN_TOKEN, Browsing, Stack
from e2e.test_pixel import pixel_ready

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
# The README's picture; rewritten only when asked (UPDATE_SCREENSHOTS=1), so a test run
# leaves the checkout clean.
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "debug.png"


def send(stack: Stack, key: str, name: str = "purchase") -> None:
    event = {"event_name": name, "email": "d@e.bug", "amount": 12.5, "idempotency_key": key}
    r = httpx.post(stack.relay.url + PATH, json=event, headers=KEY, timeout=10)
    assert r.status_code == 202, r.text


def open_debugger(stack: Stack, b: Browsing) -> Page:
    """The page, signed in through its login form (a session cookie from then on), live."""
    page = b.page
    page.goto(f"{stack.relay_origin}/debug")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#status")).to_have_text("live", timeout=5000)
    assert page.url == f"{stack.relay_origin}/debug"  # the token is in no address
    return page


def test_the_page_refuses_a_missing_or_wrong_token(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    page = browsing().page
    for url in ("/debug", "/debug?token=wrong", "/debug/events", "/debug/search?q=x"):
        response = page.goto(stack.relay_origin + url)
        assert response is not None and response.status == 401, url
    r = httpx.post(f"{stack.relay.url}/debug/replay/1", timeout=5)
    assert r.status_code == 401
    # the cookie alone does not replay from another origin (CSRF): only the page's own origin
    jar = open_debugger(stack, browsing()).context.cookies()
    cookie = {c["name"]: c["value"] for c in jar}
    assert all(c["httpOnly"] for c in jar)
    r = httpx.post(f"{stack.relay.url}/debug/replay/1", cookies=cookie,
                   headers={"Origin": "https://evil.example"}, timeout=5)
    assert r.status_code == 403


def test_an_api_event_appears_live_with_its_delivery_outcome(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """The open page follows the event as it happens (the stream, not a reload): first its
    reception, then its delivery. Judged by what the page shows, not by how fast."""
    page = open_debugger(stack, browsing())
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    send(stack, "live-1")
    row = page.locator('#live li[data-key="live-1"]')
    expect(row).to_contain_text("received from API", timeout=20000)
    expect(row).to_contain_text("delivered (202", timeout=20000)
    expect(row).to_contain_text("queued")
    assert page.evaluate("window.__sameDocument === true")


@pytest.mark.twin_window(30)
def test_search_by_id_finds_the_pixel_event_and_its_server_twin(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("pixel.html", eid="order-77"))
    pixel_ready(b.page)
    page = open_debugger(stack, browsing())
    row = page.locator('#live li[data-key="order-77"]')
    expect(row).to_contain_text("held for its twin", timeout=10000)  # the browser's purchase
    send(stack, "order-77")  # the server sends its twin with the pixel's event id
    expect(row).to_contain_text("delivered (202", timeout=10000)  # at once: the twins met
    page.get_by_label("Event id, idempotency key or outbox id").fill("order-77")
    page.keyboard.press("Enter")  # the keyboard is enough
    found = page.locator("#found li")
    expect(found.filter(has_text="received from browser → held for its twin")).to_have_count(1)
    expect(found.filter(has_text="received from API → merged (with order-77)")).to_have_count(1)
    expect(found.filter(has_text="superseded (by API event order-77")).to_have_count(1)
    expect(found.filter(has_text="delivered (202")).to_have_count(1)
    (sent,) = stack.with_key("order-77")  # one event upstream: the server's, with the visit
    assert sent["amount"] == 12.5 and "comet_token" in sent


def test_replay_a_dead_event_from_the_page(
    stack: Stack, browsing: Callable[..., Browsing], tmp_path: Path
) -> None:
    page = open_debugger(stack, browsing())
    stack.upstream.control(script=[{"status": 422, "message": "email domain is blocked"}],
                           default={"status": 202})
    send(stack, "dead-1")
    row = page.locator('#live li[data-key="dead-1"]')
    expect(row).to_contain_text("dead (422 email domain is blocked", timeout=10000)
    send(stack, "fine-1", "lead_generated")  # something delivered too, for the picture
    button = row.get_by_role("button", name="Replay dead event dead-1")
    button.focus()
    page.keyboard.press("Enter")
    expect(row).to_contain_text("replayed", timeout=5000)
    expect(row).to_contain_text("delivered (202", timeout=10000)
    assert len(stack.with_key("dead-1")) == 1
    # 200% zoom on a 1280 px window is a 640 px layout: nothing may need a sideways scroll
    page.set_viewport_size({"width": 640, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(row.get_by_text("replayed")).to_be_visible()
    # the chart follows the sightings: the summary for screen readers says what it draws
    expect(page.locator("#chart-summary")).to_contain_text("2 received, 2 delivered", timeout=5000)
    page.set_viewport_size({"width": 1100, "height": 800})
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    shot = SCREENSHOT if update else tmp_path / "debug.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
