"""The small HTTP server of `comet-relay forward --metrics-port`: /metrics, /healthz, /readyz.

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
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette

from relay.routes import health
from relay.wiring import Parts


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (IPv4 or IPv6); OSError if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def metrics_app(parts: Parts) -> Starlette:
    """GET /metrics, /healthz and /readyz, answered as `serve` answers them."""
    return Starlette(routes=health.routes(parts))


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
