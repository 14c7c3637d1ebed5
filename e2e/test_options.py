"""The API's queue and the tag's data-* options beyond the defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Route

from e2e.conftest import Browsing, Stack, loaded, until

STATIC = Path(__file__).resolve().parent.parent / "static"


def test_calls_made_before_the_snippet_loads_are_replayed_in_order(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.context.add_init_script("""
        window.comet = function () { (comet.q = comet.q || []).push(arguments) };
        comet('track', 'lead_generated', {event_id: 'q-before'});
        comet('identify', {email: 'queued@example.com', first_name: 'Quinn'});
        comet('track', 'contact', {event_id: 'q-after'});
    """)
    b.page.goto(stack.url("index.html"))
    [before] = stack.with_key("q-before")
    [after] = stack.with_key("q-after")
    assert "email" not in before
    assert after["email"] == "queued@example.com" and after["first_name"] == "Quinn"
    # the automatic page view comes after the queued calls, so it carries the identity too
    [view] = stack.wait_events(lambda e: e["event_name"] == "view_content", what="the page view")
    assert view["email"] == "queued@example.com"
    until(b.page, lambda: len(b.wire.ids()) == 3, what="three events on the wire")
    assert b.wire.ids()[:2] == ["q-before", "q-after"]


def test_identity_is_kept_for_the_visit(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    b.page.evaluate("comet('identify', {email: 'kept@example.com', phone: '+3312345678'})")
    b.page.goto(stack.url("second.html"))
    [view] = stack.wait_events(
        lambda e: "second.html" in str(e["url"]), what="the second page's view"
    )
    assert view["email"] == "kept@example.com" and view["phone"] == "+3312345678"


def test_automatic_page_views_off(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    stack.tag('data-pageview="off"')
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    b.page.evaluate("history.pushState({}, '', '/elsewhere')")
    b.page.evaluate("comet('track', 'lead_generated', {event_id: 'only-this'})")
    until(b.page, lambda: b.wire.ids(), what="the lead")
    b.page.evaluate("comet('page')")  # a page view by hand still counts
    until(b.page, lambda: len(b.wire.ids()) == 2, what="the page view by hand")
    [view] = [e for e in b.wire.events() if e["event_name"] == "view_content"]
    assert view["url"].endswith("/elsewhere") and b.wire.ids()[0] == "only-this"


def test_page_views_under_another_event_name(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    stack.tag('data-pageview="custom_event_3"')
    b = browsing()
    b.page.goto(stack.url("index.html"))
    stack.wait_events(lambda e: e["event_name"] == "custom_event_3", what="the page view")


def test_endpoint_from_a_path_prefix_and_from_data_endpoint(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    posted: list[str] = []

    def answer(route: Route) -> None:
        posted.append(route.request.url)
        route.fulfill(status=202, json={"accepted": 1, "duplicates": 0, "refused": []})

    # served under /relay/comet.js, the snippet posts to /relay/e on the relay's origin
    stack.site.rewrites["{{RELAY}}/comet.js"] = "{{RELAY}}/relay/comet.js"
    b = browsing()
    snippet = (STATIC / "comet.min.js").read_text()
    b.page.route(
        "**/relay/comet.js", lambda r: r.fulfill(body=snippet, content_type="text/javascript")
    )
    b.page.route(lambda url: "/relay/e?" in url or "/collect" in url, answer)
    b.page.goto(stack.url("index.html"))
    until(b.page, lambda: posted, what="the batch")
    assert posted == [f"{stack.relay_origin}/relay/e?k=pk_acme"]

    # a relative data-endpoint is resolved against the page, like a link; its query is kept
    stack.tag('data-endpoint="/collect/here?x=1"')
    b.page.goto(stack.url("second.html"))
    until(b.page, lambda: len(posted) == 2, what="the second batch")
    assert posted[1] == f"{stack.site.origin()}/collect/here?x=1&k=pk_acme"


def test_an_absolute_data_endpoint(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    stack.tag(f'data-endpoint="{stack.relay_origin}/e"')
    stack.site.rewrites["{{RELAY}}/comet.js"] = "{{RELAY}}/comet.js?v=2"  # no effect on the URL
    b = browsing()
    b.page.goto(stack.url("index.html", absolute="1"))
    stack.wait_events(lambda e: "absolute=1" in str(e["url"]), what="the page view")
    until(b.page, lambda: b.wire.requests, what="the batch on the wire")
    assert b.wire.requests[0].url == f"{stack.relay_origin}/e?k=pk_acme"


def test_pixel_events_mapped_by_data_fbq_custom(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    stack.tag('data-fbq-custom="MyEvent:custom_event_3, Search:custom_event_3"')
    b = browsing()
    b.page.goto(stack.url("pixel.html"))
    loaded(b.page)
    b.page.evaluate("""() => {
        fbq('trackCustom', 'MyEvent', {value: 3}, {eventID: 'custom-1'});
        fbq('track', 'Search', {}, {eventID: 'custom-2'});   // a Meta event outside the table
        fbq('trackCustom', 'Other', {}, {eventID: 'custom-3'});  // not mapped
    }""")
    [mine] = stack.with_key("custom-1")
    assert mine["event_name"] == "custom_event_3" and mine["amount"] == 3
    [search] = stack.with_key("custom-2")
    assert search["event_name"] == "custom_event_3"
    assert "custom-3" not in b.wire.ids()


def test_without_subtle_crypto_or_random_uuid(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """As on a plain-http site, where browsers offer neither."""
    b = browsing()
    b.context.add_init_script("delete Crypto.prototype.subtle; delete Crypto.prototype.randomUUID")
    b.page.goto(stack.url("index.html"))
    until(b.page, lambda: b.wire.requests, what="the first page view")
    b.page.reload()
    until(b.page, lambda: len(b.wire.requests) == 2, what="the second page view")
    events = [json.loads(r.post_data or "")["e"][0] for r in b.wire.requests]
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["event_id"]) for e in events)
    assert re.fullmatch(r"[0-9a-f]{8,14}", events[0]["fingerprint"])
    assert events[0]["fingerprint"] == events[1]["fingerprint"]
    stack.wait_events(lambda e: e["event_name"] == "view_content", 2, "both page views")
