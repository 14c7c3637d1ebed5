"""`comet-relay forward`: only the forwarder, beside `serve --no-forward` or on its own."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import click

from relay.cli.common import config_option, load_settings, outbox_errors, seconds_option
from relay.observe.shown import redacted
from relay.settings import Settings

if TYPE_CHECKING:
    import socket

log = logging.getLogger("relay.cli")


@click.command()
@config_option(required=True)
@seconds_option(
    "--shutdown-timeout", 10.0, 0.0, "On SIGTERM or SIGINT, how long requests in flight may take."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve this process's GET /metrics, /healthz and /readyz on this port.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
def forward(
    config_path: str, shutdown_timeout: float, metrics_port: int | None, metrics_host: str
) -> None:
    """Run only the forwarder, without the relay's HTTP server, until SIGTERM or SIGINT.

    Several forward processes may share one SQLite file (and `serve --no-forward`): each event
    is sent once, at least once around a crash. Together they keep each Space's
    upstream_rate_per_minute: the pace is kept in the SQLite file (or the Redis). Deliveries, retries and dead letters are counted
    (in PROMETHEUS_MULTIPROC_DIR when it is set, so `serve`'s /metrics on the same machine
    includes them; with --metrics-port on this process's own /metrics) and logged as `serve`
    logs them.
    """
    settings = load_settings(config_path)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    sock = None
    if metrics_port is not None:
        from relay.server.metrics_port import (
            listen,  # imported late: only this option needs uvicorn
        )

        try:
            sock = listen(metrics_host, metrics_port)
        except OSError as exc:
            click.echo(f"--metrics-port: cannot listen on {metrics_host}:{metrics_port}: {exc}",
                       err=True)
            raise click.exceptions.Exit(2) from None
    with outbox_errors(), _runner() as runner:
        runner.run(run_forwarder(settings, shutdown_timeout, sock))


def _runner() -> asyncio.Runner:
    """The event loop `serve` gets from uvicorn: uvloop when it is installed (it comes with
    uvicorn[standard]; a request costs less CPU on it, bench/README.md), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def run_forwarder(
    settings: Settings, shutdown_timeout: float, metrics_socket: socket.socket | None = None
) -> None:
    """Forward until SIGTERM or SIGINT, then shut down within a bound.

    On the signal the forwarder stops claiming, requests in flight get `shutdown_timeout`
    seconds to finish (the rest are cancelled), every lease is released and the outbox closed.
    Every settled attempt is reported to an `Observer` (metrics and the event log); with
    `metrics_socket` (listening) GET /metrics and GET /healthz are served on it meanwhile.
    """
    from relay.wiring import build  # imported late: only this command needs httpx

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parts = build(settings, receive=False, shutdown_timeout=shutdown_timeout)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(parts)
        if metrics_socket is not None:
            from relay.server.metrics_port import metrics_app, serving

            # the stack exits in reverse order: this server stops before the drain
            await stack.enter_async_context(serving(metrics_app(parts), metrics_socket))
            host, port = metrics_socket.getsockname()[:2]
            log.info("metrics on http://%s/metrics", _host_port(host, port))
        forwarder = parts.forwarder
        states = forwarder.states if forwarder is not None else {}
        spaces = ", ".join(sorted(states)) or "none: no active Space has an upstream"
        log.info("forwarding from %s; Spaces: %s", redacted(settings.database), spaces)
        await stop.wait()
        log.info("stopping: no new claims; requests in flight get %g s", shutdown_timeout)
    for space_id, state in sorted(states.items()):
        log.info("Space %s: %d event(s) delivered by this process", space_id, state.sent)
    log.info("stopped")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


