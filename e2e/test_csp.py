"""A page under a strict Content-Security-Policy (no inline script): the stub line as the
relay's file (GET /comet-stub.js) instead of inline, and the policy lines of docs/snippet.md."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import ConsoleMessage

from e2e.conftest import Browsing, Stack, loaded, until


def strict_policy(stack: Stack) -> str:
    """docs/snippet.md's lines for a relay on its own origin, and Meta's for its pixel."""
    relay = stack.relay_origin
    return (
        f"default-src 'self'; script-src 'self' {relay} https://connect.facebook.net; "
        f"connect-src 'self' {relay} https://www.facebook.com; img-src 'self' https://www.facebook.com"
    )


def console_errors(b: Browsing) -> list[str]:
    seen: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.append(message.text)

    b.page.on("console", console)
    return seen


def test_the_inline_stub_line_is_refused_by_the_policy(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """What the file is for: the policy refuses the tag's inline first line."""
    stack.site.headers["Content-Security-Policy"] = strict_policy(stack)
    b = browsing()
    errors = console_errors(b)
    b.page.goto(stack.url("index.html"))
    loaded(b.page)  # comet.js itself runs (from an allowed origin)
    until(b.page, lambda: [e for e in errors if "inline script" in e], what="the refusal")


def test_under_a_strict_policy_page_views_and_pixel_purchases_arrive(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    stack.site.headers["Content-Security-Policy"] = strict_policy(stack)
    b = browsing()
    errors = console_errors(b)
    b.page.goto(stack.url("csp.html", eid="csp-49"))
    loaded(b.page)
    [purchase] = stack.with_key("csp-49")
    assert purchase["event_name"] == "purchase" and purchase["amount"] == 49
    stack.wait_events(lambda e: e["event_name"] == "view_content", what="the page view")
    b.page.evaluate("comet('track', 'lead_generated', {event_id: 'csp-lead'})")
    stack.with_key("csp-lead")
    assert not [e for e in errors if "Content Security Policy" in e], errors
