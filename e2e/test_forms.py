"""Forms identify the visitor, and a wrong user field spoils no event of the visit.

Three kinds of forms: a plain HTML form the browser posts, one the page sends with fetch after
preventDefault, and a React controlled form (React 18 from e2e/frontend)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page

from e2e.conftest import Browsing, Stack, loaded, until


def warnings(page: Page) -> list[str]:
    seen: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "warning":
            seen.append(message.text)

    page.on("console", console)
    return seen


def on_the_wire(b: Browsing) -> str:
    return json.dumps(b.wire.events())


def test_a_plain_form_identifies_the_visitor_on_the_next_page(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("form.html"))
    loaded(b.page)
    b.page.fill("#plain-email", " ann@example.com ")
    b.page.fill("#plain-first", "Ann")
    b.page.fill("#plain-last", "Lee")
    b.page.fill("#plain-phone", "+33 6 12 34 56 78")
    b.page.fill("#plain-password", "hunter2-secret")
    b.page.fill("#plain-card", "4242 4242 4242 4242")
    with b.page.expect_navigation():
        b.page.click("#plain-send")
    [view] = stack.wait_events(
        lambda e: "second.html" in str(e["url"]), what="the next page's view"
    )
    assert (view["email"], view["first_name"], view["last_name"], view["phone"]) == (
        "ann@example.com",
        "Ann",
        "Lee",
        "+33 6 12 34 56 78",
    )
    # never the password, the card number or the hidden field
    until(b.page, lambda: len(b.wire.ids()) >= 2, what="both page views on the wire")
    sent = on_the_wire(b)
    assert "hunter2" not in sent and "4242" not in sent and "hidden@" not in sent


def test_a_form_sent_with_fetch_identifies_the_visitor(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("form.html"))
    loaded(b.page)
    b.page.fill("#fetched-email", "bo@example.com")
    b.page.fill("#fetched-name", "Bo Diddley")
    b.page.fill("#fetched-username", "bodiddley")
    b.page.fill("#fetched-company", "Acme Records")
    b.page.click("#fetched-send")
    b.page.wait_for_selector("#fetched-done:visible")
    [lead] = stack.wait_events(lambda e: e["event_name"] == "lead_generated", what="the lead")
    assert (lead["email"], lead["full_name"]) == ("bo@example.com", "Bo Diddley")
    assert "first_name" not in lead and "phone" not in lead
    sent = on_the_wire(b)
    assert "bodiddley" not in sent and "Acme" not in sent


def test_a_react_controlled_form_identifies_the_visitor(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    b.page.goto(f"{stack.site.origin()}/spa/react/signup")
    loaded(b.page)
    b.page.fill("#signup-name", "Cy Young")
    b.page.fill("#signup-email", "cy@example.com")
    b.page.fill("#signup-tel", "(555) 010-0199")
    b.page.fill("#signup-password", "hunter2-secret")
    b.page.click("#signup-send")
    b.page.wait_for_selector("#signed-up")
    [sign_up] = stack.wait_events(lambda e: e["event_name"] == "sign_up", what="the sign-up")
    assert (sign_up["email"], sign_up["full_name"], sign_up["phone"]) == (
        "cy@example.com",
        "Cy Young",
        "(555) 010-0199",
    )
    assert "hunter2" not in on_the_wire(b)


def test_a_wrong_value_is_dropped_with_a_warning_and_the_visit_keeps_its_own(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    warned = warnings(b.page)
    b.page.goto(stack.url("form.html"))
    loaded(b.page)
    b.page.evaluate("comet('identify', {email: 'dee@example.com'})")
    b.page.fill("#fetched-email", "dee at example")  # not an email address
    b.page.fill("#fetched-name", "Dee")
    b.page.click("#fetched-send")
    [lead] = stack.wait_events(lambda e: e["event_name"] == "lead_generated", what="the lead")
    assert (lead["email"], lead["full_name"]) == ("dee@example.com", "Dee")
    [warning] = [w for w in warned if w.startswith("comet:")]
    assert "email" in warning and "dee at example" in warning


def test_nothing_is_taken_from_a_form_before_consent(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    stack.tag('data-consent="required"')
    b = browsing()
    b.page.goto(stack.url("form.html"))
    loaded(b.page)
    b.page.fill("#fetched-email", "eve@example.com")
    b.page.click("#fetched-send")
    b.page.wait_for_selector("#fetched-done:visible")
    b.page.evaluate("comet('consent', true)")
    [lead] = stack.wait_events(lambda e: e["event_name"] == "lead_generated", what="the lead")
    assert "email" not in lead
    assert "eve@" not in on_the_wire(b)
    # with consent, the same form identifies
    b.page.click("#fetched-send")
    stack.wait_events(
        lambda e: e["event_name"] == "lead_generated" and e.get("email") == "eve@example.com",
        what="the lead after consent",
    )


def test_form_capture_off(stack: Stack, browsing: Callable[..., Browsing]) -> None:
    stack.tag('data-forms="off"')
    b = browsing()
    b.page.goto(stack.url("form.html"))
    loaded(b.page)
    b.page.fill("#fetched-email", "fay@example.com")
    b.page.click("#fetched-send")
    [lead] = stack.wait_events(lambda e: e["event_name"] == "lead_generated", what="the lead")
    assert "email" not in lead and "fay@" not in on_the_wire(b)


def test_the_empty_email_visit_loses_no_event(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """A form sent with its email left blank, as comet('identify', {email: ''}): every event of
    the visit arrives, on this page and the next. So does every event of a visit that an older
    snippet had stored with that empty email: the relay drops the field, keeps the event."""
    b = browsing()
    warned = warnings(b.page)
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    b.page.evaluate("""() => {
        comet('identify', {email: ''});
        comet('track', 'sign_up', {event_id: 'empty-sign-up'});
    }""")
    b.page.goto(stack.url("second.html"))
    loaded(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 20, event_id: 'empty-purchase'})")
    b.page.evaluate("history.pushState({}, '', '/after-purchase')")
    assert [w for w in warned if w.startswith("comet:") and "email" in w]

    older = browsing()
    older.context.add_init_script("sessionStorage.setItem('comet_v', JSON.stringify({email: ''}))")
    older.page.goto(stack.url("index.html", older="1"))
    loaded(older.page)
    older.page.evaluate("comet('track', 'lead_generated', {event_id: 'empty-older'})")

    for key in ("empty-sign-up", "empty-purchase", "empty-older"):
        [event] = stack.with_key(key)
        assert "email" not in event
    views = stack.wait_events(
        lambda e: e["event_name"] == "view_content", 4, "the four page views"
    )
    assert not [v for v in views if "email" in v]
    assert not [w for w in warned if "refused" in w]
