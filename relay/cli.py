"""The `comet-relay` command: serve, forward, keys, check, outbox.

Each command parses its options and calls into the package; the work lives elsewhere. This is
the one module that reads the process environment, and it hands it on as a mapping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from relay import keys as api_keys
from relay import settings as config
from relay.errors import ConfigError, Unavailable
from relay.settings import Settings
from relay.store import Outbox, OutboxStats, open_outbox
from relay.store.base import Change, ChangeFeed, DeadEvent, follow

if TYPE_CHECKING:
    import socket

    from relay.store.migrate import MigrationReport

TRACK_PATH = "/public-api/v1/events/track"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
log = logging.getLogger("relay.cli")


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


def _load(config_path: str, *, secrets: bool = True) -> Settings:
    """The settings, or exit 2 with every problem. `secrets=False` for commands that only
    work on the outbox: they need no upstream token and no secret key."""
    with config_errors():
        return config.load(config_path, os.environ, secrets=secrets)


@main.command()
@config_option(required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--no-forward",
    is_flag=True,
    help="Only accept events; leave delivery to `comet-relay forward` processes.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Log every request (off by default: each line holds a visitor's IP, and costs time).",
)
def serve(
    config_path: str | None, host: str, port: int, no_forward: bool, access_log: bool
) -> None:
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

    if "*" in settings.trusted_proxies:
        click.echo(
            "warning: trusted_proxies = [\"*\"] trusts every peer's X-Forwarded-For, so any "
            "client can choose its own IP and dodge the per-IP limit; list your proxies.",
            err=True,
        )
    with config_errors():
        app = create_app(settings, forward=not no_forward)
    uvicorn.run(app, **server_options(settings, host, port, access_log=access_log))


def server_options(
    settings: Settings, host: str, port: int, *, access_log: bool = False
) -> dict[str, Any]:
    """How `serve` runs uvicorn (the benchmarks run their baseline with the same options).

    The HTTP protocol is uvicorn's httptools one with a bound on each request head's size and
    time (see relay.limits); a shutdown waits at most 30 s for open requests.
    """
    return {
        "host": host,
        "port": port,
        "http": "relay.limits:BoundedHeadProtocol",
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


def seconds_option(name: str, default: float, minimum: float, help: str) -> Callable[[F], F]:
    """An option holding a number of seconds, at least `minimum`."""
    return click.option(
        name,
        default=default,
        show_default=True,
        type=click.FloatRange(min=minimum),
        metavar="SECONDS",
        help=help,
    )


@main.command()
@config_option(required=True)
@seconds_option(
    "--shutdown-timeout", 10.0, 0.0, "On SIGTERM or SIGINT, how long requests in flight may take."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve this process's GET /metrics and GET /healthz on this port.",
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
    settings = _load(config_path)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    sock = None
    if metrics_port is not None:
        from relay.metrics_http import listen  # imported late: only this option needs uvicorn

        try:
            sock = listen(metrics_host, metrics_port)
        except OSError as exc:
            click.echo(f"--metrics-port: cannot listen on {metrics_host}:{metrics_port}: {exc}",
                       err=True)
            raise click.exceptions.Exit(2) from None
    with outbox_errors():
        asyncio.run(run_forwarder(settings, shutdown_timeout, sock))


async def run_forwarder(
    settings: Settings, shutdown_timeout: float, metrics_socket: socket.socket | None = None
) -> None:
    """Forward until SIGTERM or SIGINT, then shut down within a bound.

    On the signal the forwarder stops claiming, requests in flight get `shutdown_timeout`
    seconds to finish (the rest are cancelled), every lease is released and the outbox closed.
    Every settled attempt is reported to an `Observer` (metrics and the event log); with
    `metrics_socket` (listening) GET /metrics and GET /healthz are served on it meanwhile.
    """
    from relay.forwarder import forwarding  # imported late: only this command needs httpx
    from relay.metrics import Metrics
    from relay.observe import Observer, configure_event_log

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics(settings.metrics_multiproc_dir)
    observer = Observer(metrics)
    configure_event_log(settings.log_format)
    outbox = open_outbox(settings.database)
    await outbox.start()
    try:
        async with AsyncExitStack() as stack:
            forwarder = await stack.enter_async_context(forwarding(
                settings, outbox, shutdown_timeout=shutdown_timeout, on_settled=observer.settled
            ))
            if metrics_socket is not None:
                from relay.metrics_http import metrics_app, serving

                # the stack exits in reverse order: this server stops before the drain
                app = metrics_app(metrics, outbox, forwarder)
                await stack.enter_async_context(serving(app, metrics_socket))
                host, port = metrics_socket.getsockname()[:2]
                log.info("metrics on http://%s/metrics", _host_port(host, port))
            spaces = ", ".join(sorted(forwarder.states)) or "none: no active Space has an upstream"
            log.info("forwarding from %s; Spaces: %s", settings.database, spaces)
            await stop.wait()
            log.info("stopping: no new claims; requests in flight get %g s", shutdown_timeout)
        for space_id, state in sorted(forwarder.states.items()):
            log.info("Space %s: %d event(s) delivered by this process", space_id, state.sent)
    finally:
        await outbox.close()
    log.info("stopped")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


@contextmanager
def outbox_errors() -> Iterator[None]:
    """Turn an unreachable or unsupported outbox into a one-line error and exit status 1."""
    try:
        yield
    except (NotImplementedError, Unavailable) as exc:
        raise click.ClickException(str(exc)) from None


def outbox_exists(settings: Settings) -> bool:
    """False for a SQLite file that is not there: opening it would create an empty outbox."""
    return "://" in settings.database or os.path.exists(settings.database)


def with_outbox(database: str, work: Callable[[Outbox], Awaitable[T]]) -> T:
    """Run `work` on the outbox at `database`, opened for it and closed again."""

    async def run() -> T:
        store = open_outbox(database)
        await store.start()
        try:
            return await work(store)
        finally:
            await store.close()

    with outbox_errors():
        return asyncio.run(run())


def _no_outbox(settings: Settings) -> str:
    return f"no outbox at {settings.database} yet: the relay has not run"


@outbox.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@config_option(required=True)
def outbox_stats(as_json: bool, config_path: str) -> None:
    """Count the events queued, retrying, delivered and dead, in total and per Space."""
    settings = _load(config_path, secrets=False)
    if outbox_exists(settings):
        stats = with_outbox(settings.database, lambda store: store.stats())
    else:
        click.echo(_no_outbox(settings), err=True)
        stats = OutboxStats()
    click.echo(json.dumps(stats.as_dict()) if as_json else format_stats(stats))


def format_stats(stats: OutboxStats) -> str:
    """The counts as aligned text, the totals first and then one line per Space."""
    totals: Mapping[str, object] = stats.as_dict()
    lines = [
        f"{name:<10}{totals[name]:>10}" for name in ("queued", "retrying", "delivered", "dead")
    ]
    for space, counts in sorted(stats.spaces.items()):
        lines.append(f"  {space}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


@outbox.command("dead")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
@config_option(required=True)
def outbox_dead(as_json: bool, limit: int, config_path: str) -> None:
    """List the dead events, oldest first, with the upstream's last answer."""
    settings = _load(config_path, secrets=False)
    dead: list[DeadEvent] = []
    if outbox_exists(settings):
        dead = with_outbox(settings.database, lambda store: store.dead_letters(limit + 1))
    else:
        click.echo(_no_outbox(settings), err=True)
    more, dead = len(dead) > limit, dead[:limit]
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(d) for d in dead], indent=2))
    else:
        click.echo(format_dead(dead))
    if more:
        click.echo(f"(the oldest {limit} only; there are more, see --limit)", err=True)


DEAD_COLUMNS = ("ID", "SPACE", "EVENT", "IDEMPOTENCY KEY", "ATTEMPTS", "STATUS", "MESSAGE")


def format_dead(dead: Sequence[DeadEvent]) -> str:
    """Dead events as a table with a header; the message column is last and not cut."""
    if not dead:
        return "no dead events"
    rows = [DEAD_COLUMNS] + [
        (
            str(d.id),
            d.space,
            d.event_name,
            d.idempotency_key,
            str(d.attempts),
            "-" if d.last_status is None else str(d.last_status),
            " ".join(d.last_message.split()),
        )
        for d in dead
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(DEAD_COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows
    )


@outbox.command("replay")
@click.option("--all", "replay_all", is_flag=True, help="Every dead event.")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@config_option(required=True)
def outbox_replay(replay_all: bool, ids: tuple[int, ...], config_path: str) -> None:
    """Put dead events (IDs from `outbox dead`, or --all) back into the queue."""
    if replay_all == bool(ids):
        raise click.UsageError("give either --all or the IDs of dead events, not both")
    settings = _load(config_path, secrets=False)
    if not outbox_exists(settings):
        raise click.ClickException(_no_outbox(settings))
    chosen = None if replay_all else list(ids)
    n = with_outbox(settings.database, lambda store: store.replay(chosen, time.time()))
    click.echo(f"replayed {n} dead event(s)")
    if chosen is not None and n < len(set(chosen)):
        click.echo(f"{len(set(chosen)) - n} of the IDs given were not dead events", err=True)


@outbox.command("tail")
@config_option(required=False)
@seconds_option("--interval", 1.0, 0.01, "How often to look for new steps while there are none.")
def outbox_tail(config_path: str | None, interval: float) -> None:
    """Follow events as they are accepted, retried, delivered or dead, one line each.

    Without --config: the embedded default's relay.toml in ./comet-data (RELAY_DATA_DIR).
    Runs until Ctrl-C.
    """
    if config_path is None:
        config_path = os.path.join(config.default_data_dir(os.environ), config.CONFIG_NAME)
    settings = _load(config_path, secrets=False)
    if not outbox_exists(settings):
        raise click.ClickException(_no_outbox(settings))

    async def tail(store: Outbox) -> None:
        if not isinstance(store, ChangeFeed):
            raise click.ClickException(f"{type(store).__name__} cannot be followed yet")
        click.echo(f"following {settings.database} (Ctrl-C to stop)", err=True)
        async for change in follow(store, interval):
            click.echo(format_change(change))

    try:
        with_outbox(settings.database, tail)
    except KeyboardInterrupt:
        pass


def format_change(change: Change) -> str:
    """One line of `outbox tail`: time (UTC), Space, event, key, state, then the attempts."""
    when = datetime.fromtimestamp(change.at, UTC).isoformat(timespec="milliseconds")
    line = f"{when[:23]}Z  {change.space:<12} {change.event_name:<20} {change.idempotency_key}"
    line += f"  {change.state}"
    if change.state != "accepted":
        line += f" attempts={change.attempts}"
    if change.last_status is not None or change.last_message:
        status = "-" if change.last_status is None else change.last_status
        line += f" last={status} {' '.join(change.last_message.split())}".rstrip()
    return line


def _redis_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # The value is never shown back: a Redis URL may carry a password.
    if not value.startswith(("redis://", "rediss://")):
        raise click.BadParameter("must be a redis:// or rediss:// URL")
    return value


@outbox.command("migrate")
@click.option(
    "--to",
    "url",
    required=True,
    callback=_redis_url,
    metavar="URL",
    help="The Redis to move into: redis://[[USER]:PASSWORD@]HOST:PORT/DB, or rediss://.",
)
@config_option(required=True)
def outbox_migrate(url: str, config_path: str) -> None:
    """Move the SQLite outbox's queued and dead events and live dedup keys into Redis.

    Stop every relay and forwarder that uses the outbox first. Nothing is lost or sent twice;
    an interrupted run resumes when run again. Delivered events stay in the SQLite file.
    """
    from relay.backends import is_redis  # imported late: these import redis
    from relay.store.migrate import MigrationError, migrate

    settings = _load(config_path, secrets=False)
    if is_redis(settings.database):
        raise click.ClickException(
            "the outbox is in Redis already (relay.database is a Redis URL): nothing to migrate"
        )

    def progress(report: MigrationReport) -> None:
        click.echo(f"moved {report.queued + report.dead} event(s) so far", err=True)

    try:
        report = asyncio.run(migrate(settings.database, url, time.time(), progress=progress))
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    except Unavailable as exc:
        raise click.ClickException(
            "Redis could not be reached or failed; run it again, it resumes. "
            f"({_hide_secrets(str(exc), url)})"
        ) from None
    click.echo(format_migration(report, settings.database))


def _hide_secrets(text: str, url: str) -> str:
    """`text` without `url` or the password in it."""
    password = urlsplit(url).password
    for secret in (url, password):
        if secret:
            text = text.replace(secret, "***")
    return text


def format_migration(report: MigrationReport, source: str) -> str:
    """What `outbox migrate` moved, and what to do next."""
    return "\n".join([
        f"moved from {source} into Redis:",
        f"  queued events   {report.queued:>8}",
        f"  dead events     {report.dead:>8}",
        f"  dedup keys      {report.dedup_keys:>8}",
        f"  skipped         {report.skipped:>8}  (of the events above, already in Redis from an interrupted run)",
        f"Delivered events stay in {source}.",
        "",
        'Next: set database = "redis://..." (the URL given to --to) in [relay] of every',
        "relay's relay.toml, then restart the relays.",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
