"""The Meta pixel and the relay carry the same event id, once each, whatever loads first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Route

from e2e.conftest import Browsing, Stack, loaded, until


class Held:
    """Requests for `pattern` wait until release(): to choose which script loads first.

    A held script delays the page's load event: navigate with wait_until="commit".
    """

    def __init__(self, page: Page, pattern: str) -> None:
        self.page = page
        self.routes: list[Route] = []
        page.route(pattern, lambda route: self.routes.append(route))

    def release(self) -> None:
        until(self.page, lambda: self.routes, what="the held request")
        for route in self.routes:
            route.continue_()


def pixel_calls(page: Page, event: str = "Purchase") -> list[list[Any]]:
    calls = page.evaluate("window.__pixelCalls || []")
    return [c for c in calls if c[0] == "track" and c[1] == event]


def pixel_ready(page: Page) -> None:
    page.wait_for_function("Array.isArray(window.__pixelCalls)", timeout=15000)


def purchases(stack: Stack, key: str) -> list[dict[str, Any]]:
    return stack.wait_events(
        lambda e: e["event_name"] == "purchase" and e.get("idempotency_key") == key,
        what=f"the purchase {key}",
    )


def test_pixel_before_the_snippet(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    """Base code and a Purchase queued before the snippet runs; fbevents.js arrives after it."""
    b = browsing()
    fbevents = Held(b.page, "**/fbevents.js")
    b.page.goto(stack.url("pixel.html", eid="order-49"), wait_until="commit")
    loaded(b.page)
    fbevents.release()
    pixel_ready(b.page)

    [event] = purchases(stack, "order-49")
    assert event["amount"] == 49
    assert "currency" not in event and event["fingerprint"] and event["comet_token"]
    assert [c[3] for c in pixel_calls(b.page)] == [{"eventID": "order-49"}]
    until(b.page, lambda: b.wire.ids("view_content"), what="the page view")
    # counted once although the snippet saw it in the queue and again when fbevents.js drained it;
    # the pixel's PageView is not mirrored (the snippet's own page view is the one)
    assert b.wire.ids("purchase") == ["order-49"]
    assert len(b.wire.ids("view_content")) == 1


def test_pixel_injected_two_seconds_later(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    """A tag manager adds the base code and its Purchase 2 s after the snippet is running."""
    b = browsing()
    b.page.goto(stack.url("pixel-late.html", eid="late-49"))
    loaded(b.page)
    assert b.page.evaluate("typeof window.fbq") == "undefined"
    [event] = purchases(stack, "late-49")
    assert event["amount"] == 49
    pixel_ready(b.page)
    assert [c[3] for c in pixel_calls(b.page)] == [{"eventID": "late-49"}]
    assert b.wire.ids("purchase") == ["late-49"]
    # window.fbq is the pixel's own object again, a plain property, not a wrapper
    assert b.page.evaluate("""() => {
        const d = Object.getOwnPropertyDescriptor(window, 'fbq');
        return 'value' in d && d.value === window._fbq && typeof d.value.callMethod === 'function';
    }""")


def test_snippet_after_fbevents(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    """fbevents.js has taken over before the snippet runs: later pixel calls are still seen."""
    b = browsing()
    snippet = Held(b.page, "**/comet.js")
    b.page.goto(stack.url("pixel.html"), wait_until="commit")
    pixel_ready(b.page)
    snippet.release()
    loaded(b.page)
    b.page.evaluate("""() => {
        fbq('track', 'Purchase', {value: '49.90', currency: 'EUR'}, {eventID: 'after-49'});
        fbq('trackSingle', '1234567890', 'Lead', {}, {eventID: 'lead-1'});
        fbq('track', 'AddToCart', {value: 5});                          // no eventID: skipped
        fbq('trackCustom', 'Unmapped', {}, {eventID: 'custom-1'});      // no mapping: skipped
        fbq('track', 'PageView', {}, {eventID: 'pv-1'});                // never mirrored
    }""")
    [event] = purchases(stack, "after-49")
    assert event["amount"] == 49.9
    stack.wait_events(
        lambda e: e.get("idempotency_key") == "lead-1" and e["event_name"] == "lead_generated",
        what="the lead",
    )
    until(b.page, lambda: len(b.wire.ids()) >= 3, what="three events on the wire")
    assert sorted(b.wire.ids()) == sorted(["after-49", "lead-1", *b.wire.ids("view_content")])
    assert len(b.wire.ids("view_content")) == 1


@pytest.mark.parametrize("fbevents_loaded", [True, False], ids=["fbevents-loaded", "fbevents-late"])
def test_track_fires_the_pixel_once_with_the_same_id(
    stack: Stack, browsing: Callable[..., Browsing], fbevents_loaded: bool
) -> None:
    b = browsing()
    fbevents = None if fbevents_loaded else Held(b.page, "**/fbevents.js")
    b.page.goto(stack.url("pixel.html"), wait_until="commit")
    loaded(b.page)
    if fbevents_loaded:
        pixel_ready(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 10, currency: 'EUR'})")
    if fbevents is not None:
        fbevents.release()  # fbevents.js drains the queue holding the snippet's own call
        pixel_ready(b.page)

    until(b.page, lambda: b.wire.ids("purchase"), what="the purchase batch")
    [event_id] = b.wire.ids("purchase")
    [event] = purchases(stack, event_id)
    assert event["amount"] == 10 and "currency" not in event
    assert pixel_calls(b.page) == [
        ["track", "Purchase", {"value": 10, "currency": "EUR"}, {"eventID": event_id}]
    ]
    # no loop: the snippet's own pixel call was not captured back into a second relay event
    b.page.evaluate("comet('track', 'lead_generated')")
    until(b.page, lambda: b.wire.ids("lead_generated"), what="the lead batch")
    assert b.wire.ids("purchase") == [event_id]
    assert [e["idempotency_key"] for e in stack.events() if e["event_name"] == "purchase"] == [
        event_id
    ]
    assert len(pixel_calls(b.page, "Lead")) == 1


def test_mirroring_off(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    """data-mirror-fbq="false": pixel calls are not captured, and track does not fire the pixel."""
    b = browsing()
    stack.tag('data-mirror-fbq="false"')
    b.page.goto(stack.url("pixel.html", eid="not-mirrored"))
    loaded(b.page)
    pixel_ready(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 3})")
    until(b.page, lambda: b.wire.ids("purchase"), what="the purchase batch")
    [event_id] = b.wire.ids("purchase")
    assert event_id != "not-mirrored"
    assert [c[3] for c in pixel_calls(b.page)] == [{"eventID": "not-mirrored"}]
