"""Page views, identity, attribution and single-page navigation, as the upstream receives them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from playwright.sync_api import ConsoleMessage

from e2e.conftest import Browsing, Stack, loaded, until

HEX = re.compile(r"[0-9a-f]{13,64}")


def views(stack: Stack, url_part: str, n: int = 1) -> list[dict[str, object]]:
    return stack.wait_events(
        lambda e: e["event_name"] == "view_content" and url_part in str(e["url"]),
        n,
        f"{n} page view(s) of {url_part}",
    )


def test_loading_the_snippet_throws_nothing_into_the_page(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    page = b.page
    console_errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    page.on("console", console)
    with page.expect_response(lambda r: r.url.endswith("/comet.js")) as served:
        page.goto(stack.url("index.html"))
    loaded(page)
    assert served.value.status == 200
    # odd calls from the page are swallowed, not thrown
    page.evaluate("""() => {
        comet(); comet('track'); comet('track', null, 5); comet('identify', null);
        comet('identify', 'x'); comet('nope', 1); comet('page', {}); comet.apply(null, []);
        comet('identify', {phone: 33612345678, nickname: 'not a field'});
    }""")
    until(page, lambda: len(b.wire.requests) >= 1, what="the first batch")
    page.reload()
    loaded(page)
    assert b.errors == [] and console_errors == []
    # nor do they spoil the visit: the next page view is accepted, with only the user fields
    both = views(stack, "/index.html", 2)
    assert [v.get("phone") for v in both if "phone" in v] == ["33612345678"]
    assert not [v for v in both if "nickname" in v or "0" in v]


def test_page_view_arrives_with_ip_user_agent_token_fingerprint_url_and_campaign(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    landing = stack.url(
        "index.html",
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="spring",
        utm_term="shoes",
        utm_content="ad-7",
        comet_source="newsletter",
        fbclid="fb.1.abc",
        gclid="g-1",
    )
    b.page.goto(landing)
    [view] = views(stack, "utm_campaign=spring")
    user_agent = b.page.evaluate("navigator.userAgent")
    assert view["url"] == landing
    assert view["ip"] == "127.0.0.1"
    assert view["user_agent"] == user_agent
    assert view["comet_token"] and isinstance(view["comet_token"], str)
    assert HEX.fullmatch(str(view["fingerprint"]))
    assert view["idempotency_key"] == b.wire.ids("view_content")[0]
    # explicit comet_* wins over utm_*; the rest is mapped
    assert {k: v for k, v in view.items() if k.startswith("comet_") and k != "comet_token"} == {
        "comet_source": "newsletter",
        "comet_type": "cpc",
        "comet_campaign": "spring",
        "comet_keyword": "shoes",
        "comet_ad_id": "ad-7",
    }
    for field in ("ip", "user_agent", "comet_token", "idempotency_key"):
        assert all(field not in e for e in b.wire.events())  # only the relay sets them

    # two pages later, a purchase still carries the campaign of the landing page
    b.page.goto(stack.url("second.html"))
    loaded(b.page)
    b.page.evaluate("comet('track', 'purchase', {amount: 25.5, order_id: 'o-1'})")
    [purchase] = stack.wait_events(lambda e: e["event_name"] == "purchase", what="the purchase")
    assert purchase["comet_campaign"] == "spring" and purchase["comet_source"] == "newsletter"
    assert purchase["amount"] == 25.5 and purchase["order_id"] == "o-1"
    # fbclid and gclid are no Create Event fields: they travel in the URL, added back to it
    assert purchase["url"] == stack.url("second.html", fbclid="fb.1.abc", gclid="g-1")


def test_identity_is_stable_across_pages_and_a_reload(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    b = browsing()
    b.page.goto(stack.url("index.html"))
    views(stack, "/index.html")
    b.page.goto(stack.url("second.html"))
    views(stack, "/second.html")
    b.page.reload()
    seen = views(stack, "/second.html", 2) + views(stack, "/index.html")
    assert len({e["comet_token"] for e in seen}) == 1
    assert len({e["fingerprint"] for e in seen}) == 1

    # another visitor (a fresh context) gets another token; the browser is the same one, so
    # its fingerprint is too
    other = browsing()
    other.page.goto(stack.url("index.html", visitor="2"))
    [theirs] = views(stack, "visitor=2")
    assert theirs["comet_token"] != seen[0]["comet_token"]
    assert theirs["fingerprint"] == seen[0]["fingerprint"]


def test_single_page_navigation_counts_each_new_page_once(
    stack: Stack, browsing: Callable[..., Browsing]
) -> None:
    """pushState and popstate count a new path or query at once; replaceState right after a
    view rewrites it; the hash counts only as a route (#/..., #!/...). The rules with real
    routers and the quiet time of replaceState: e2e/test_spa.py."""
    b = browsing()
    b.page.goto(stack.url("index.html"))
    loaded(b.page)
    b.page.evaluate("""() => {
        history.pushState({}, '', '/app/a');
        history.pushState({}, '', '/app/a');      // the same URL again: not counted
        history.replaceState({}, '', '/app/b');   // a redirect right after the view: the same
        history.replaceState({}, '', '/app/b');   // view
        location.hash = 'details';                // an anchor: not counted
        location.hash = '#/';                     // the root route is no hash: not counted
        location.hash = '#/cart';                 // a route: counted
        location.hash = '#!/checkout';            // so is this one
    }""")
    b.page.go_back()  # popstate: back to #/cart
    b.page.evaluate("history.pushState({}, '', '/app/a?page=2')")  # a new query: counted
    b.page.evaluate("comet('page')")  # the same URL as the last page view: not counted
    b.page.evaluate("history.pushState({}, '', '/app/end#top')")
    until(b.page, lambda: "/app/end" in str(b.wire.events()), what="the last page view")

    paths = [str(e["url"]).split(str(stack.site.port))[1] for e in b.wire.events()]
    assert paths == [
        "/index.html",
        "/app/a",
        "/app/b#/cart",
        "/app/b#!/checkout",
        "/app/b#/cart",
        "/app/a?page=2",
        "/app/end#top",
    ]
    arrived = views(stack, "/app/end") and views(stack, "", len(paths))
    assert Counter(str(e["url"]).split(str(stack.site.port))[1] for e in arrived) == Counter(paths)
