"""create_app(settings) -> Starlette: the routes, the one error mapping, the lifespan."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import CreateEvent
from relay.errors import RelayError
from relay.forwarder import forwarding
from relay.openapi import openapi_schema
from relay.ratelimit import MemoryRateLimiter, RateLimiter
from relay.settings import Settings
from relay.store import Outbox, open_outbox

log = logging.getLogger("relay")

TRACK_PATH = "/public-api/v1/events/track"


def create_app(
    settings: Settings,
    *,
    outbox: Outbox | None = None,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
    forward: bool = True,
) -> Starlette:
    """The relay as an ASGI app; mountable under a path of another Starlette/FastAPI app."""
    outbox = outbox if outbox is not None else open_outbox(settings.database)
    limiter = limiter if limiter is not None else MemoryRateLimiter(clock)
    openapi = openapi_schema(TRACK_PATH)
    track = CreateEvent(settings, limiter, outbox, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await outbox.start()
        try:
            if forward and any(s.upstream_url for s in settings.spaces.values()):
                async with forwarding(settings, outbox, clock=clock) as forwarder:
                    track.on_queued = forwarder.wake
                    yield
            else:
                yield
        finally:
            await outbox.close()

    async def healthz(request: Request) -> Response:
        stats = await outbox.stats()
        return JSONResponse({"status": "ok", "queued": stats.queued, "dead": stats.dead})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    app = Starlette(
        routes=[
            Route(TRACK_PATH, track.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={
            RelayError: _relay_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.outbox = outbox
    app.state.limiter = limiter
    return app


async def _relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"message": "Internal error; the event was not accepted."}, status_code=500)
