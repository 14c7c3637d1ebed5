"""Page views a person would count, in real single-page apps: Vue 3 with vue-router 4 (history
and hash mode) and React 18 with react-router 6, from npm (e2e/frontend, pinned by its
lockfile, installed by the `frontend` fixture).

The rules (static/src/pageviews.js): a new path or query is a page view; the hash only when it
is a route (#/... or #!/...); replaceState within a second of the last view rewrites that view
(a router's start-up rewrite), later it counts once the URL has been quiet for a second. The
browser's clock is Playwright's (page.clock), so "a second later" needs no waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from e2e.conftest import Browsing, Stack, loaded, until

PERSON_LOOKS = 1500  # ms: longer than the snippet's quiet time of a second


def view_paths(b: Browsing, stack: Stack) -> list[str]:
    """The page views the snippet sent, as path, query and hash."""
    origin = stack.site.origin()
    return [
        str(e["url"]).removeprefix(origin)
        for e in b.wire.events()
        if e["event_name"] == "view_content"
    ]


def open_app(b: Browsing, stack: Stack, path: str, heading: str) -> Page:
    page = b.page
    page.clock.install()  # the page's timers run when the test says so
    page.goto(f"{stack.site.origin()}/{path}")
    loaded(page)
    page.wait_for_selector(f"h1:text-is('{heading}')")
    page.clock.run_for(PERSON_LOOKS)  # the snippet sends the first batch
    return page


def landing_view(b: Browsing, stack: Stack, before: str, after: str) -> str:
    """The one view of the landing page, whose URL the router rewrites at start-up: the URL
    `before` the rewrite or `after` it, whichever the snippet (loaded async, as on a real
    site) saw first."""
    [path] = until(b.page, lambda: view_paths(b, stack), what="the landing view")
    assert path in (before, after)
    return path


def expect_views(b: Browsing, stack: Stack, paths: list[str]) -> None:
    """The snippet sent exactly these page views, and the upstream got them all."""
    until(b.page, lambda: len(view_paths(b, stack)) >= len(paths), what=f"{len(paths)} views")
    # a view sent late would follow the last one: the last is there, and nothing after it
    b.page.clock.run_for(PERSON_LOOKS)
    assert view_paths(b, stack) == paths
    stack.wait_events(lambda e: e["event_name"] == "view_content", len(paths), "the views")


def test_vue_router_history_mode(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    page = open_app(b, stack, "spa/vue/?utm_source=news", "Home")
    page.click("#to-reviews")  # an in-page anchor: the same page
    page.click("#products")
    page.wait_for_selector("h1:text-is('Products')")
    page.click("#search")
    page.wait_for_selector("h1:text-is('Search')")
    page.clock.run_for(PERSON_LOOKS)
    page.type("#q", "shoes")  # five replaceState calls, ?q=s ... ?q=shoes
    page.clock.run_for(PERSON_LOOKS)  # then the person stops typing
    page.click("#home")
    page.wait_for_selector("h1:text-is('Home')")
    expect_views(
        b,
        stack,
        [
            "/spa/vue/?utm_source=news",
            "/spa/vue/products",
            "/spa/vue/search",
            "/spa/vue/search?q=shoes",
            "/spa/vue/",
        ],
    )
    [search] = stack.wait_events(lambda e: "q=shoes" in str(e["url"]), what="the search view")
    assert search["comet_source"] == "news"  # the campaign of the landing page


def test_vue_router_redirect_on_start_up_is_one_view(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    open_app(b, stack, "spa/vue/old", "New")  # the router replaces /old with /new
    path = landing_view(b, stack, "/spa/vue/old", "/spa/vue/new")
    b.page.click("#products")
    expect_views(b, stack, [path, "/spa/vue/products"])


def test_vue_router_hash_mode(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    # the router rewrites the landing URL to /vue-hash.html?utm_source=news#/
    page = open_app(b, stack, "vue-hash.html?utm_source=news", "Home")
    assert page.evaluate("location.hash") == "#/"
    landing = landing_view(b, stack, "/vue-hash.html?utm_source=news",
                           "/vue-hash.html?utm_source=news#/")
    page.click("#products")
    page.wait_for_selector("h1:text-is('Products')")
    page.go_back()
    page.wait_for_selector("h1:text-is('Home')")
    expect_views(
        b,
        stack,
        [landing, "/vue-hash.html?utm_source=news#/products", "/vue-hash.html?utm_source=news#/"],
    )


def test_vue_router_hash_mode_landing_on_a_route(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    page = open_app(b, stack, "vue-hash.html#/products", "Products")
    page.click("#search")
    page.wait_for_selector("h1:text-is('Search')")
    expect_views(b, stack, ["/vue-hash.html#/products", "/vue-hash.html#/search"])


def test_react_router(stack: Stack, browsing: Callable[..., Browsing], frontend: Path) -> None:
    b = browsing()
    page = open_app(b, stack, "spa/react/?utm_source=news", "Home")
    page.click("#to-reviews")  # an in-page anchor: the same page
    page.click("#products")
    page.wait_for_selector("h1:text-is('Products')")
    page.click("#search")
    page.wait_for_selector("h1:text-is('Search')")
    page.clock.run_for(PERSON_LOOKS)
    page.type("#q", "shoes")  # setSearchParams(..., {replace: true}) on every key
    page.clock.run_for(PERSON_LOOKS)
    page.go_back()  # back to the products page
    page.wait_for_selector("h1:text-is('Products')")
    expect_views(
        b,
        stack,
        [
            "/spa/react/?utm_source=news",
            "/spa/react/products",
            "/spa/react/search",
            "/spa/react/search?q=shoes",
            "/spa/react/products",
        ],
    )


def test_react_router_redirect_on_start_up_is_one_view(
    stack: Stack, browsing: Callable[..., Browsing], frontend: Path
) -> None:
    b = browsing()
    open_app(b, stack, "spa/react/old", "New")  # <Navigate to="/new" replace />
    [path] = until(b.page, lambda: view_paths(b, stack), what="the landing view")
    assert path in ("/spa/react/old", "/spa/react/new")
    b.page.click("#products")
    expect_views(b, stack, [path, "/spa/react/products"])
