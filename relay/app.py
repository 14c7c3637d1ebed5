"""create_app(settings) -> Starlette: the routes, the one error mapping, the lifespan."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from relay.api import INTERNAL_ERROR, CreateEvent
from relay.backends import open_limiter
from relay.browser import Collect, Demo, Snippet, static_file
from relay.debug import Debugger, not_configured_routes
from relay.errors import ConfigError, Refused
from relay.forwarder import Forwarder, forwarding
from relay.journal import Journal
from relay.metrics import CONTENT_TYPE, Metrics, RequestTimer, scrape
from relay.observe import Observer, configure_event_log
from relay.ratelimit import RateLimiter
from relay.rules.openapi import openapi_schema
from relay.settings import TRACK_PATH, Settings
from relay.store import Outbox, open_outbox
from relay.tokens import VisitorTokens

log = logging.getLogger("relay")


def create_app(
    settings: Settings,
    *,
    outbox: Outbox | None = None,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
    forward: bool = True,
) -> Starlette:
    """The relay as an ASGI app; mountable under a path of another Starlette/FastAPI app.

    X-Forwarded-For and X-Forwarded-Proto are honoured from `settings.trusted_proxies` only,
    by uvicorn's own middleware, so the client address is right however the app is served.
    Raises `ConfigError` when a Space has a site key but there is no secret key to sign
    visitor tokens with.
    """
    if not settings.secret_keys and any(s.site_key for s in settings.spaces.values()):
        raise ConfigError(
            settings.source, ["relay.secret_keys: required to sign visitor tokens for site keys"]
        )
    outbox = outbox if outbox is not None else open_outbox(settings.database)
    limiter = limiter if limiter is not None else open_limiter(settings.database, clock)
    openapi = openapi_schema(TRACK_PATH)
    track = CreateEvent(settings, limiter, outbox, clock)
    collect = None
    if settings.secret_keys:
        tokens = VisitorTokens(settings.secret_keys, clock=clock)
        collect = Collect(settings, limiter, outbox, tokens, clock)
    metrics = Metrics(settings.metrics_multiproc_dir)
    debugger = None
    if settings.admin_token:
        journal = Journal()
        debugger = Debugger(settings.admin_token, journal, outbox, static_file("debug.html"), clock)
    observer = Observer(metrics, debugger.journal if debugger else None, clock)
    track.on_received = observer.api
    track.on_timed = lambda seconds: metrics.request(TRACK_PATH, "POST", seconds)
    if collect is not None:
        collect.on_received = observer.browser
    configure_event_log(settings.log_format)
    forwarders: list[Forwarder] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await outbox.start()
        await limiter.start()
        if debugger is not None:
            debugger.start()
        try:
            if forward and any(s.upstream_url for s in settings.spaces.values()):
                async with forwarding(
                    settings, outbox, clock=clock, on_settled=observer.settled
                ) as forwarder:
                    forwarders.append(forwarder)
                    track.on_queued = forwarder.wake
                    if collect is not None:
                        collect.on_queued = forwarder.wake
                    yield
            else:
                yield
        finally:
            forwarders.clear()
            if debugger is not None:
                await debugger.stop()
            await limiter.close()
            await outbox.close()

    async def healthz(request: Request) -> Response:
        stats = await outbox.stats()
        body = {"status": "ok", "queued": stats.queued, "dead": stats.dead}
        if collect is not None:
            body["bot_events_dropped"] = collect.bot_events
        return JSONResponse(body)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    async def metrics_text(request: Request) -> Response:
        return Response(await scrape(metrics, outbox, clock()), media_type=CONTENT_TYPE)

    async def readyz(request: Request) -> Response:
        return await _readiness(settings, outbox, forwarders[0] if forwarders else None, clock)

    routes: list[BaseRoute] = [
        Route(TRACK_PATH, track, methods=["POST"]),  # reached by TrackFirst only for a 405
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *(debugger.routes() if debugger is not None else not_configured_routes()),
        *_browser_routes(settings, collect),
    ]
    templates = {r.endpoint: r.path for r in routes if isinstance(r, Route)}
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrackFirst, track=track, path=TRACK_PATH),
            Middleware(RequestTimer, metrics=metrics, routes=templates),
            Middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies)),
        ],
        exception_handlers={
            Refused: _relay_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.outbox = outbox
    app.state.limiter = limiter
    app.state.metrics = metrics
    return app


class TrackFirst:
    """ASGI middleware: a POST to the Create Event path goes straight to its endpoint.

    The endpoint answers every request itself (refusals and its own failures included) and
    times itself, so the routing, the exception middleware and the request timer are skipped
    on the relay's busiest path. Mounted under a prefix, the path is matched below it.
    """

    def __init__(self, app: ASGIApp, track: ASGIApp, path: str) -> None:
        self.app = app
        self.track = track
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path == self.path:
                await self.track(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _readiness(
    settings: Settings, outbox: Outbox, forwarder: Forwarder | None, clock: Callable[[], float]
) -> Response:
    """200 when the store answers, with each Space's upstream state; 503 when it does not.

    A Space's upstream is "paused" (with `paused_until`) while a 401/403 holds its delivery,
    "answering" while its forwarder runs, and "not forwarded" in a process that does not
    forward (serve --no-forward) or for a Space without an upstream.
    """
    try:
        stats = await outbox.stats()
    except Exception as exc:  # noqa: BLE001 - any failure of the store means not ready
        log.warning("readiness: the outbox does not answer: %s", exc)
        body = {"status": "unavailable", "store": f"not answering: {type(exc).__name__}"}
        return JSONResponse(body, status_code=503)
    paused = forwarder.paused() if forwarder is not None else {}
    spaces: dict[str, object] = {}
    for sid in settings.spaces:
        counts = stats.spaces.get(sid, {})
        entry: dict[str, object] = {
            "queued": counts.get("queued", 0),
            "dead": counts.get("dead", 0),
        }
        if sid not in paused:
            entry["upstream"] = "not forwarded"
        elif paused[sid]:
            entry["upstream"], entry["paused_until"] = "paused", paused[sid]
        else:
            entry["upstream"] = "answering"
        spaces[sid] = entry
    return JSONResponse({"status": "ok", "store": "answering", "spaces": spaces})


def _browser_routes(settings: Settings, collect: Collect | None) -> list[BaseRoute]:
    """The snippet (and its aliases), the collect endpoint, and the demo page when asked for."""
    snippet = Snippet.from_package()
    routes: list[BaseRoute] = [
        Route(path, snippet.handle, methods=["GET"], name="comet_snippet" if i == 0 else None)
        for i, path in enumerate((settings.snippet_path, *settings.snippet_aliases))
    ]
    if collect is not None:
        path = settings.collect_path
        routes.append(Route(path, collect.handle, methods=["POST"], name="comet_collect"))
        routes.append(Route(path, collect.preflight, methods=["OPTIONS"]))
    if settings.demo:
        demo = Demo(settings, static_file("demo.html"))
        routes.append(Route("/demo", demo.handle, methods=["GET"], name="comet_demo"))
    return routes


async def _relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"message": INTERNAL_ERROR}, status_code=500)
