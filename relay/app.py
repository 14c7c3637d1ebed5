"""create_app(settings) -> Starlette: the routes and the middleware, over the parts of
`relay.wiring.build`; mountable under a path of another Starlette or FastAPI app."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from relay.auth.visitor import VisitorTokens
from relay.errors import ConfigError
from relay.limits.base import RateLimiter
from relay.routes import health
from relay.routes.collect import Collect
from relay.routes.debug import Debugger, not_configured_routes
from relay.routes.demo import Demo
from relay.routes.errors import HANDLERS
from relay.routes.snippet import STUB_FILE, Snippet, static_file
from relay.routes.timing import RequestTimer
from relay.routes.track import CreateEvent, TrackFirst
from relay.settings import TRACK_PATH, Settings
from relay.store import Outbox
from relay.wiring import build


class RelayApp(Starlette):
    """Starlette, but a POST to the Create Event path goes to its endpoint before Starlette's
    own middleware stack (see `TrackFirst`): the relay's hot path costs two coroutine layers
    and a `send` wrapper less per request."""

    first: TrackFirst | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.first is not None and self.first.takes(scope):
            scope["app"] = self
            await self.first.track(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    outbox: Outbox | None = None,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
    forward: bool = True,
) -> Starlette:
    """The relay as an ASGI app. Its lifespan runs the parts (and the forwarder, unless
    `forward` is off or no Space has an upstream); `outbox`, `limiter` and `clock` replace
    the ones the settings imply (tests).

    X-Forwarded-For and X-Forwarded-Proto are honoured from `settings.trusted_proxies` only,
    by uvicorn's own middleware, so the client address is right however the app is served.
    Raises `ConfigError` when a Space has a site key but there is no secret key to sign
    visitor tokens with.
    """
    if not settings.secret_keys and any(s.site_key for s in settings.spaces.values()):
        raise ConfigError(
            settings.source, ["relay.secret_keys: required to sign visitor tokens for site keys"]
        )
    upstreams = any(s.upstream_url for s in settings.spaces.values())
    parts = build(
        settings, forward=forward and upstreams, outbox=outbox, limiter=limiter, clock=clock
    )
    assert parts.intake is not None  # built to receive
    track = CreateEvent(settings, parts.intake, parts.metrics.request_timer(TRACK_PATH, "POST"))
    collect = None
    if settings.secret_keys:
        tokens = VisitorTokens(settings.secret_keys, clock=clock)
        collect = Collect(settings, parts.intake, tokens)
    debugger = None
    if parts.journal is not None and settings.admin_token:
        debugger = Debugger(
            settings.admin_token, parts.journal, parts.outbox, static_file("debug.html"), clock
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with parts:
            if debugger is not None:
                debugger.start()
            try:
                with _collector_tuned():
                    yield
            finally:
                if debugger is not None:
                    await debugger.stop()

    routes: list[BaseRoute] = [
        Route(TRACK_PATH, track, methods=["POST"]),  # reached by TrackFirst only for a 405
        *health.routes(parts, lambda: collect.bot_events if collect is not None else 0),
        *(debugger.routes() if debugger is not None else not_configured_routes()),
        *_browser_routes(settings, collect),
    ]
    templates = {r.endpoint: r.path for r in routes if isinstance(r, Route)}
    app = RelayApp(
        routes=routes,
        middleware=[
            Middleware(RequestTimer, metrics=parts.metrics, routes=templates),
            Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies)),
        ],
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.first = TrackFirst(track, TRACK_PATH)
    app.state.parts = parts
    app.state.settings = settings
    app.state.outbox = parts.outbox
    app.state.limiter = parts.limiter
    app.state.metrics = parts.metrics
    return app


# Every request makes hundreds of short-lived containers and almost never a cycle, so the
# youngest generation is collected every 10,000 allocations instead of 700; and what start-up
# made lives as long as the app, so it is frozen out of the collections. Together they were
# about 5 % of the event loop's time under load (bench/README.md).
GC_YOUNGEST = 10_000


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    """The cyclic garbage collector tuned for serving while the app runs; as before after."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(before[0], GC_YOUNGEST), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _browser_routes(settings: Settings, collect: Collect | None) -> list[BaseRoute]:
    """The snippet (and its aliases), its stub line as a file, the collect endpoint, and the
    demo page when asked for."""
    snippet = Snippet.from_package()
    routes: list[BaseRoute] = [
        Route(path, snippet.handle, methods=["GET"], name="comet_snippet" if i == 0 else None)
        for i, path in enumerate((settings.snippet_path, *settings.snippet_aliases))
    ]
    stub = Snippet.from_package(STUB_FILE)
    routes.append(Route(settings.stub_path, stub.handle, methods=["GET"]))
    if collect is not None:
        path = settings.collect_path
        routes.append(Route(path, collect.handle, methods=["POST"], name="comet_collect"))
        routes.append(Route(path, collect.preflight, methods=["OPTIONS"]))
    if settings.demo:
        demo = Demo(settings, static_file("demo.html"))
        routes.append(Route("/demo", demo.handle, methods=["GET"], name="comet_demo"))
    return routes
