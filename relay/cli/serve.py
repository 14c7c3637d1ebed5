"""`comet-relay serve`: the relay's HTTP server (and, unless told otherwise, its forwarder)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import click

from relay import settings as config
from relay.cli.common import config_errors, config_option, load_settings
from relay.settings import TRACK_PATH, Settings


@click.command()
@config_option(required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--no-forward",
    is_flag=True,
    help="Only accept events; leave delivery to `comet-relay forward` processes.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="HTTP worker processes (default: [relay] workers, else 1); see docs/operations.md.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log every request (off by default: each line holds a visitor's IP, and costs time).",
)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    no_forward: bool,
    workers: int | None,
    access_log: bool,
) -> None:
    """Run the relay. Without a config: the embedded default in ./comet-data (RELAY_DATA_DIR)."""
    if config_path:
        settings = load_settings(config_path)
    else:
        with config_errors():
            settings, api_key = config.embedded_default(
                os.path.abspath(config.default_data_dir(os.environ)), os.environ, host, port
            )
        click.echo(welcome(settings, api_key, host, port))

    if "*" in settings.trusted_proxies:
        click.echo(
            "warning: trusted_proxies = [\"*\"] trusts every peer's X-Forwarded-For, so any "
            "client can choose its own IP and dodge the per-IP limit; list your proxies.",
            err=True,
        )
    if workers is not None:
        settings = dataclasses.replace(settings, workers=workers)
    options = server_options(settings, host, port, access_log=access_log)
    if settings.workers > 1:
        from relay.cli.workers import run_workers

        raise SystemExit(run_workers(settings, options, forward=not no_forward))
    import uvicorn

    from relay.app import create_app  # imported late: `check` and `keys` need no web stack

    with config_errors():
        app = create_app(settings, forward=not no_forward)
    uvicorn.run(app, **options)


def server_options(
    settings: Settings, host: str, port: int, *, access_log: bool = False
) -> dict[str, Any]:
    """How `serve` runs uvicorn (the benchmarks run their baseline with the same options).

    The HTTP protocol is uvicorn's httptools one with a bound on each request head's size and
    time (see relay.server.head); a shutdown waits at most 30 s for open requests.
    """
    return {
        "host": host,
        "port": port,
        "http": "relay.server.head:BoundedHeadProtocol",
        "proxy_headers": True,
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
        "log_level": "info",
        "access_log": access_log,
        "server_header": False,
        "timeout_graceful_shutdown": 30,
    }


def welcome(settings: Settings, api_key: str | None, host: str, port: int) -> str:
    """What `serve` prints when it starts the embedded default: where, which keys, a curl."""
    demo = settings.spaces.get("demo")
    url = f"http://{_reachable(host)}:{port}{TRACK_PATH}"
    lines = ["", f"comet-relay: embedded default configuration {settings.source}"]
    if demo is not None and demo.site_key:
        lines.append(f"  site key (public, for the browser snippet): {demo.site_key}")
    if api_key is None:
        lines += [
            "  The demo API key was printed on first start only. For a new one run",
            "  `comet-relay keys new --space demo` and paste its lines into the file above.",
        ]
    else:
        lines += [
            f"  demo API key (shown this once; only its hash is kept): {api_key}",
            "",
            "  Send an event:",
            f"    curl -i -X POST {url} \\",
            f'      -H "Authorization: Bearer {api_key}" \\',
            '      -H "Content-Type: application/json" \\',
            """      -d '{"event_name": "lead_generated", "email": "jane@example.com"}'""",
        ]
    return "\n".join([*lines, ""])


def _reachable(host: str) -> str:
    """The address a local curl should use to reach a server listening on `host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


