"""The Meta pixel and the relay carry the same event id, once each, whatever loads first.

The pages paste Meta's base code as Meta gives it; its fbevents.js is the local stand-in
(e2e/pages/fbevents.js), which takes over the base code's object and drains its queue as the
real one does. The tag's first line is the stub line of the docs (static/comet-stub.js)."""

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
            route.fallback()  # to the context's route of fbevents.js, or the network


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


def purchase(page: Page, event_id: str) -> None:
    """The page's own pixel call of a purchase with an event id."""
    page.evaluate(
        "id => fbq('track', 'Purchase', {value: 49, currency: 'EUR'}, {eventID: id})", event_id
    )


def once_each(stack: Stack, b: Browsing, ids: list[str]) -> None:
    """Each id reached the upstream as one purchase, went over the wire once and reached the
    pixel once."""
    for event_id in ids:
        [event] = purchases(stack, event_id)
        assert event["amount"] == 49 and "currency" not in event
    until(b.page, lambda: len(b.wire.ids("purchase")) >= len(ids), what="the purchases sent")
    assert sorted(b.wire.ids("purchase")) == sorted(ids)
    assert sorted(c[3]["eventID"] for c in pixel_calls(b.page)) == sorted(ids)


@pytest.mark.parametrize(
    "page", ["pixel.html", "pixel-first.html"], ids=["stub-first", "pixel-first"]
)
@pytest.mark.parametrize("first", ["fbevents", "snippet"], ids=["fbevents-first", "snippet-first"])
def test_every_pixel_call_with_an_id_arrives_once_whatever_loads_first(
    stack: Stack, browsing: Callable[..., Browsing], page: str, first: str
) -> None:
    """A purchase in the page's base code, one between the first and the second script to load
    and one after both; fbevents.js or comet.js first; the tag before or after the pixel."""
    b = browsing()
    second = Held(b.page, "**/comet.js" if first == "fbevents" else "**/fbevents.js")
    b.page.goto(stack.url(page, eid=f"{first}-inline"), wait_until="commit")
    if first == "fbevents":
        pixel_ready(b.page)  # fbevents.js has drained the queue, the snippet is not there
    else:
        loaded(b.page)
    purchase(b.page, f"{first}-between")
    second.release()
    pixel_ready(b.page)
    loaded(b.page)
    purchase(b.page, f"{first}-after")
    once_each(stack, b, [f"{first}-{when}" for when in ("inline", "between", "after")])
    assert b.page.evaluate("window.fbq === window._fbq")  # the pixel's own object


def test_the_natural_race_loses_no_purchase_ten_times_out_of_ten(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """Nothing held: fbevents.js (answered at once, as from the cache) and comet.js race, as on
    a real shop, with the purchase in the page's code; each run in a fresh browser context."""
    for run in range(10):
        b = browsing()
        b.page.goto(stack.url("pixel.html", eid=f"race-{run}"))
        loaded(b.page)
        pixel_ready(b.page)
        once_each(stack, b, [f"race-{run}"])
        b.close()


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


def test_the_currency_goes_to_the_pixel_with_the_value_and_not_upstream(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """data-currency on the tag, or currency in the call (which wins), as Meta expects it."""
    stack.tag('data-currency="USD"')
    b = browsing()
    b.page.goto(stack.url("pixel.html"))
    loaded(b.page)
    pixel_ready(b.page)
    b.page.evaluate("""() => {
        comet('track', 'purchase', {amount: 49, event_id: 'usd-49'});
        comet('track', 'purchase', {amount: 20, currency: 'EUR', event_id: 'eur-20'});
    }""")
    until(b.page, lambda: len(pixel_calls(b.page)) == 2, what="two pixel purchases")
    assert pixel_calls(b.page) == [
        ["track", "Purchase", {"value": 49, "currency": "USD"}, {"eventID": "usd-49"}],
        ["track", "Purchase", {"value": 20, "currency": "EUR"}, {"eventID": "eur-20"}],
    ]
    for key in ("usd-49", "eur-20"):
        [event] = purchases(stack, key)
        assert "currency" not in event
    assert not [e for e in b.wire.events() if "currency" in e]
