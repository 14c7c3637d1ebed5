"""The `comet-relay` command: serve, keys, check, outbox.

Each command parses its options and calls into the package; the work lives elsewhere. This is
the one module that reads the process environment, and it hands it on as a mapping.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from relay import keys as api_keys
from relay import settings as config
from relay.errors import ConfigError
from relay.settings import Settings
from relay.store import OutboxStats, open_outbox

TRACK_PATH = "/public-api/v1/events/track"
F = TypeVar("F", bound=Callable[..., Any])


def config_option(required: bool) -> Callable[[F], F]:
    """The --config option; RELAY_CONFIG stands in for it when it is absent."""
    return click.option(
        "--config",
        "config_path",
        required=required,
        envvar="RELAY_CONFIG",
        show_envvar=True,
        metavar="PATH",
        help="The relay.toml to use.",
    )


@click.group()
def main() -> None:
    """comet-relay: a self-hosted, first-party tracking relay for the Create Event API."""


@contextmanager
def config_errors() -> Iterator[None]:
    """Turn a ConfigError into its problems on stderr and exit status 2, without a traceback."""
    try:
        yield
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None


def _load(config_path: str) -> Settings:
    with config_errors():
        return config.load(config_path, os.environ)


@main.command()
@config_option(required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def serve(config_path: str | None, host: str, port: int) -> None:
    """Run the relay. Without a config: the embedded default in ./comet-data (RELAY_DATA_DIR)."""
    if config_path:
        settings = _load(config_path)
    else:
        with config_errors():
            settings, api_key = config.embedded_default(
                os.path.abspath(config.default_data_dir(os.environ)), os.environ, host, port
            )
        click.echo(welcome(settings, api_key, host, port))

    import uvicorn

    from relay.app import create_app  # imported late: `check` and `keys` need no web stack

    with config_errors():
        app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=",".join(settings.trusted_proxies),
        log_level="info",
        server_header=False,
    )


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


@main.group("keys")
def keys_group() -> None:
    """API keys of the Spaces."""


def _space_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not config.SPACE_ID.fullmatch(value):
        raise click.BadParameter("a Space id holds only letters, digits, '_' and '-'")
    return value


@keys_group.command("new")
@click.option("--space", "space_id", required=True, callback=_space_id, help="The Space's id.")
def keys_new(space_id: str) -> None:
    """Make a new API key: print it once, with the lines to paste into relay.toml."""
    key = api_keys.new_key()
    click.echo(f'New API key for Space "{space_id}" (shown this once, store it now):\n')
    click.echo(f"  {key}\n")
    click.echo("Paste these lines into relay.toml and restart the relay:\n")
    click.echo(api_keys.toml_lines(space_id, api_keys.hash_key(key)))
    click.echo("Only the key's SHA-256 is stored; the key itself cannot be recovered later.")


@main.command()
@config_option(required=True)
def check(config_path: str) -> None:
    """Validate a relay.toml and name every problem (exit status 2 if there is any)."""
    click.echo(summary(_load(config_path)))


def summary(settings: Settings) -> str:
    """A few lines on a valid configuration: the database and each Space with its upstream."""
    lines = [f"{settings.source}: OK", f"  database: {settings.database}"]
    lines.append(f"  spaces: {len(settings.spaces)}")
    for space in settings.spaces.values():
        state = "active" if space.active else "inactive"
        upstream = space.upstream_url or "no upstream (events stay queued)"
        lines.append(f"    {space.id}: {state}, {len(space.api_keys)} API key(s), {upstream}")
    return "\n".join(lines)


@main.group()
def outbox() -> None:
    """The queue of accepted events."""


@outbox.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@config_option(required=True)
def outbox_stats(as_json: bool, config_path: str) -> None:
    """Count the events queued, retrying, delivered and dead, in total and per Space."""
    settings = _load(config_path)
    if "://" not in settings.database and not os.path.exists(settings.database):
        # Opening it would create an empty outbox where none was; say so instead.
        click.echo(f"no outbox at {settings.database} yet: the relay has not run", err=True)
        stats = OutboxStats()
    else:
        try:
            stats = asyncio.run(read_stats(settings.database))
        except NotImplementedError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(stats.as_dict()) if as_json else format_stats(stats))


async def read_stats(database: str) -> OutboxStats:
    """The outbox's counts; the outbox is opened for this and closed again."""
    store = open_outbox(database)
    await store.start()
    try:
        return await store.stats()
    finally:
        await store.close()


def format_stats(stats: OutboxStats) -> str:
    """The counts as aligned text, the totals first and then one line per Space."""
    totals: Mapping[str, object] = stats.as_dict()
    lines = [
        f"{name:<10}{totals[name]:>10}" for name in ("queued", "retrying", "delivered", "dead")
    ]
    for space, counts in sorted(stats.spaces.items()):
        lines.append(f"  {space}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
