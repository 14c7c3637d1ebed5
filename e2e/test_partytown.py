"""The Meta pixel in a web worker, by Partytown's documented recipe (@builder.io/partytown from
npm, e2e/frontend): `forward: ['fbq']` and the base code in a text/partytown script. On the
page, window.fbq is Partytown's forwarder; the pixel's own object lives in the worker. What the
site adds (docs/snippet.md): 'comet' in `mainWindowAccessors` and the stub line at the top of
the text/partytown script, whose observer hands the worker's pixel calls to the page's comet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from e2e.conftest import Browsing, Stack, loaded, until


def test_a_purchase_on_the_page_reaches_the_relay_once(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    b.page.goto(stack.url("partytown.html", eid="pt-49"))
    loaded(b.page)
    [purchase] = stack.with_key("pt-49")
    assert purchase["event_name"] == "purchase" and purchase["amount"] == 49
    # a call after the worker is up, through Partytown's forwarder
    b.page.evaluate("fbq('track', 'Lead', {}, {eventID: 'pt-lead'})")
    [lead] = stack.with_key("pt-lead")
    assert lead["event_name"] == "lead_generated"
    until(b.page, lambda: len(b.wire.ids()) >= 3, what="the page view and both conversions")
    assert sorted(b.wire.ids("purchase") + b.wire.ids("lead_generated")) == ["pt-49", "pt-lead"]
    assert b.page.evaluate("typeof window.fbq.callMethod") == "undefined"  # the forwarder
