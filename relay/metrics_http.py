"""The small HTTP server of `comet-relay forward --metrics-port`: GET /metrics and GET /healthz.

A forward process has no web server of its own, so on another machine than the `serve`
processes its figures would be out of reach of Prometheus. This serves them: a two-route
Starlette app on uvicorn, in the forwarder's own event loop (so the outbox gauges are read
with the forwarder's connection), on a socket bound before the forwarder starts (so a port in
use is a clear error at start-up, not a traceback later).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.forwarder import Forwarder
from relay.metrics import CONTENT_TYPE, Metrics, scrape
from relay.store import Outbox


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (IPv4 or IPv6); OSError if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def metrics_app(
    metrics: Metrics,
    outbox: Outbox,
    forwarder: Forwarder,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """GET /metrics (as `serve` answers it: counters, histograms and the outbox gauges) and
    GET /healthz (alive, with each forwarded Space's upstream state)."""

    async def metrics_text(request: Request) -> Response:
        return Response(await scrape(metrics, outbox, clock()), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        spaces: dict[str, object] = {}
        for sid, until in sorted(forwarder.paused().items()):
            spaces[sid] = {"upstream": "paused", "paused_until": until} if until else {
                "upstream": "answering"
            }
        return JSONResponse({"status": "ok", "spaces": spaces})

    return Starlette(
        routes=[
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the forward command handles SIGTERM and SIGINT
    itself and stops this server once the forwarder has drained."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Starlette, sock: socket.socket) -> AsyncIterator[None]:
    """Serve `app` on the listening `sock` for the duration of the block; then stop within
    about two seconds and close the socket."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # leave the forward command's logging as it is
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
