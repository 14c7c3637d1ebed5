"""Consent, Global Privacy Control, crawlers and foreign origins."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import Page

from e2e.conftest import BOT_UA, Browsing, Stack, loaded, until

STORAGE = """() => [localStorage, sessionStorage].flatMap(s => Object.keys(s))
                   .filter(k => k.startsWith('comet'))"""


# Counts the snippet's posts in the page itself, as they are made: no race with the
# browser's report of its requests.
COUNT_SENDS = """() => {
    window.__cometSends = 0;
    const count = (url) => { if (String(url).includes('/e?')) window.__cometSends++; };
    const fetch = window.fetch;
    window.fetch = function (url) { count(url); return fetch.apply(this, arguments); };
    const beacon = navigator.sendBeacon && navigator.sendBeacon.bind(navigator);
    if (beacon) navigator.sendBeacon = (url, data) => { count(url); return beacon(url, data); };
}"""


def stays_quiet(page: Page, b: Browsing, seconds: float) -> None:
    """Nothing goes out in the next `seconds` of the page's own time, which the fake clock
    runs through at once: every timer the snippet set (the fingerprint's wait, a batch's)
    has fired, however slow the machine, and nothing was posted."""
    page.clock.pause_at(page.evaluate("Date.now()"))
    for _ in range(3):  # a timer's promise may set the next timer: run each in turn
        page.clock.run_for(int(seconds * 1000))
    assert page.evaluate("window.__cometSends") == 0, "the snippet sent before consent"
    assert b.wire.requests == [], "the snippet sent before consent"
    page.clock.resume()


def test_consent_required_sends_and_stores_nothing_before_consent(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.add_init_script(f"({COUNT_SENDS})()")
    b.page.clock.install()
    b.page.goto(stack.url("consent.html", utm_source="mail"))
    loaded(b.page)
    b.page.evaluate("""() => {
        comet('identify', {email: 'ann@example.com'});
        comet('track', 'lead_generated', {event_id: 'lead-before-consent'});
    }""")
    # the snippet holds events at most 0.8 s for the fingerprint: ten times that
    stays_quiet(b.page, b, 8)
    assert b.page.evaluate(STORAGE) == []
    assert b.context.cookies() == []

    b.page.click("text=Accept")
    lead = stack.wait_events(
        lambda e: e.get("idempotency_key") == "lead-before-consent",
        what="the lead held until consent",
    )[0]
    assert b.page.evaluate("window.__cometSends") >= 1  # the count sees the snippet's posts
    assert lead["email"] == "ann@example.com" and lead["comet_source"] == "mail"
    stack.wait_events(lambda e: e["event_name"] == "view_content", what="the held page view")
    assert "comet_consent" in b.page.evaluate(STORAGE)

    # consent is remembered: the next page is counted without asking again
    b.page.goto(stack.url("consent.html", visit="2"))
    stack.wait_events(lambda e: "visit=2" in str(e["url"]), what="the page view after consent")


def test_consent_withdrawn_stops_sending(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    until(b.page, lambda: b.wire.ids("view_content"), what="the page view")
    b.page.evaluate("comet('consent', false); comet('track', 'purchase', {amount: 1})")
    b.page.evaluate("history.pushState({}, '', '/after-withdrawal')")
    stack.sentinel(browsing().page, stack.url("second.html", sentinel="1"))
    assert b.wire.ids("purchase") == []
    assert not [e for e in stack.events() if "after-withdrawal" in str(e["url"])]


def test_global_privacy_control_sets_do_not_capi(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.context.add_init_script(
        "Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})"
    )
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 5, do_not_capi: false})")
    got = stack.wait_events(
        lambda e: e["event_name"] in ("purchase", "view_content"),
        2,
        what="a page view and a purchase",
    )
    assert [e["do_not_capi"] for e in got] == [True, True]

    # without GPC the field is not set
    plain = browsing()
    plain.page.goto(stack.url("index.html", gpc="off"))
    [view] = stack.wait_events(lambda e: "gpc=off" in str(e["url"]), what="the plain page view")
    assert "do_not_capi" not in view


def test_crawlers_are_not_forwarded(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    bot = browsing(user_agent=BOT_UA)
    with bot.page.expect_response(lambda r: "/e?" in r.url) as answer:
        bot.page.goto(stack.url("index.html", crawler="1"))
        loaded(bot.page)
        bot.page.evaluate("comet('track', 'purchase', {amount: 9})")
    assert answer.value.status < 300  # the relay decided: the snippet keeps no copy to retry
    until(bot.page, lambda: len(bot.wire.ids()) >= 2, what="the crawler's page view and purchase")

    stack.sentinel(browsing().page, stack.url("second.html", sentinel="1"))
    arrived = stack.events()
    assert not [e for e in arrived if "Googlebot" in str(e.get("user_agent"))]
    assert not [e for e in arrived if "crawler=1" in str(e["url"])]


def test_a_foreign_origin_is_refused(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    b = browsing()
    foreign = stack.url("index.html", host="127.0.0.1", foreign="1")
    b.page.goto(foreign)
    [request] = until(b.page, lambda: b.wire.requests, what="the foreign page's batch")
    until(b.page, lambda: request.failure, what="the browser to refuse the answer")
    # Chromium reports neither the answer nor the Origin of a request that CORS failed: ask the
    # relay the same question again, from the page's origin
    origin = b.page.evaluate("location.origin")
    assert origin == stack.site.origin("127.0.0.1")
    answer = httpx.post(
        request.url,
        content=request.post_data_buffer,
        headers={"Origin": origin, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers

    stack.sentinel(browsing().page, stack.url("second.html", sentinel="1"))
    assert not [e for e in stack.events() if "foreign=1" in str(e["url"])]
