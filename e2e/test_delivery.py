"""How batches leave the page: one batch per task, a beacon when hidden, retries after failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, Route

from e2e.conftest import Browsing, Stack, loaded, until

KEPT = "JSON.parse(localStorage.getItem('comet_q') || '[]')"


def collect(url: str) -> bool:
    return "/e?k=" in url


def kept(page: Page, n: int | None = None) -> list[dict[str, Any]] | None:
    """The events kept in localStorage for a later page (None unless there are `n`)."""
    events: list[dict[str, Any]] = page.evaluate(KEPT)
    return events if n is None or len(events) == n else None


def test_failed_sends_are_sent_again_on_the_next_page_with_their_id_and_time(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.route(collect, lambda route: route.abort())  # offline, as far as the relay goes
    b.page.goto(stack.url("index.html", offline="1"))
    loaded(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 7})")
    stored = until(b.page, lambda: kept(b.page, 2), what="two kept events")
    sent = {e["event_name"]: e for e in stored}
    assert all(isinstance(e["event_time"], int) for e in stored)

    b.page.unroute(collect)
    b.page.goto(stack.url("second.html"))
    for name, event in sent.items():
        [got] = stack.with_key(event["event_id"])
        assert got["event_time"] == event["event_time"]  # when it happened, not when it arrived
        assert got["url"] == event["url"] and got["event_name"] == name
    until(b.page, lambda: kept(b.page, 0) is not None and len(b.wire.ids()) >= 5, what="the retry")
    # once: sent offline, then once again from the second page
    assert sorted(b.wire.ids("purchase")) == [sent["purchase"]["event_id"]] * 2
    stack.sentinel(b.page, stack.url("index.html", sentinel="1"))  # nothing more is sent
    purchases = [e for e in stack.events() if e["event_name"] == "purchase"]
    assert [e["idempotency_key"] for e in purchases] == [sent["purchase"]["event_id"]]


def test_5xx_is_kept_for_later_and_4xx_is_the_relays_decision(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    answers = [400, 503]
    origin = stack.site.origin()

    def answer(route: Route) -> None:
        status = answers.pop(0) if answers else 503
        route.fulfill(
            status=status,
            body=json.dumps({"message": "no"}),
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
            },
        )

    b.page.route(collect, answer)
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    until(
        b.page,
        lambda: len(b.wire.requests) == 1 and b.wire.requests[0].response(),
        what="the page view's 400",
    )
    b.page.evaluate("comet('track', 'purchase', {event_id: 'p-503'})")
    purchase = until(b.page, lambda: kept(b.page, 1), what="the purchase kept after a 503")
    assert [e["event_id"] for e in purchase] == ["p-503"]  # the page view was dropped


def test_events_of_one_task_travel_in_one_batch(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    until(b.page, lambda: b.wire.requests, what="the page view")
    b.page.evaluate("""() => {
        comet('track', 'add_to_cart', {amount: 1});
        comet('track', 'initiate_checkout', {amount: 1});
        comet('track', 'purchase', {amount: 1});
    }""")
    until(b.page, lambda: len(b.wire.requests) == 2, what="the second batch")
    assert [e["event_name"] for e in json.loads(b.wire.requests[1].post_data or "")["e"]] == [
        "add_to_cart",
        "initiate_checkout",
        "purchase",
    ]
    assert "text/plain" in (b.wire.requests[1].headers.get("content-type") or "")
    stack.wait_events(lambda e: e["event_name"] != "view_content", 3, "the three conversions")


def test_a_page_being_hidden_sends_by_beacon(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    until(b.page, lambda: b.wire.requests and b.wire.requests[0].response(), what="the cookie")
    # track, and the page is hidden before the snippet's own flush (a microtask) runs
    b.page.evaluate("""() => {
        comet('track', 'lead_generated', {event_id: 'beacon-1'});
        Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    until(b.page, lambda: len(b.wire.requests) == 2, what="the beacon")
    assert b.wire.requests[1].resource_type == "ping"
    [lead] = stack.wait_events(lambda e: e["idempotency_key"] == "beacon-1", what="the lead")
    views = stack.wait_events(lambda e: e["event_name"] == "view_content", what="the page view")
    assert lead["comet_token"] == views[0]["comet_token"]  # the beacon carried the cookie


def test_a_visitors_first_batches_share_one_token(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """The next batch waits for the answer that sets the visitor cookie."""
    b = browsing()
    first: list[Route] = []
    b.page.route(collect, lambda route: first.append(route) if not first else route.continue_())
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    until(b.page, lambda: first, what="the first batch")
    b.page.evaluate("comet('track', 'lead_generated', {event_id: 'second-batch'})")
    assert len(b.wire.requests) == 1  # waiting for the first answer
    first[0].continue_()
    until(b.page, lambda: len(b.wire.requests) == 2, what="the second batch")
    [lead] = stack.with_key("second-batch")
    [view] = stack.wait_events(lambda e: e["event_name"] == "view_content", what="the page view")
    assert lead["comet_token"] == view["comet_token"]


def test_kept_events_are_at_most_100_and_at_most_7_days_old(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.context.add_init_script("""
        if (!sessionStorage.getItem('seeded')) {
            sessionStorage.setItem('seeded', '1');
            const now = Math.round(Date.now() / 1000);
            const event = (id, age) => ({event_name: 'lead_generated', event_id: id,
                                         url: location.href, event_time: now - age});
            const stale = [1, 2, 3].map(i => event('stale-' + i, 8 * 86400));
            const fresh = [...Array(110).keys()].map(i => event('fresh-' + i, 6 * 86400));
            localStorage.setItem('comet_q', JSON.stringify([...stale, ...fresh]));
        }
    """)
    b.page.route(collect, lambda route: route.abort())
    b.page.goto(stack.url("index.html"))
    # 110 fresh events and the page view go out in six batches, one at a time, and come back
    until(
        b.page, lambda: len(b.wire.requests) == 6 and kept(b.page, 100), what="six failed batches"
    )
    ids = [e["event_id"] for e in kept(b.page) or []]
    assert ids[:-1] == [f"fresh-{i}" for i in range(11, 110)]  # the oldest ones made room
    assert ids[-1] == b.wire.ids("view_content")[0]
    assert not [r for r in b.wire.requests if "stale-" in (r.post_data or "")]
