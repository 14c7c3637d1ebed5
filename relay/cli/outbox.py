"""`comet-relay outbox`: the queue of accepted events, seen and repaired from the shell."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from relay import settings as config
from relay.cli.common import (
    config_option,
    load_settings,
    no_outbox,
    outbox_exists,
    seconds_option,
    with_outbox,
)
from relay.errors import Unavailable
from relay.observe.shown import redacted, shown
from relay.store import Outbox, OutboxStats
from relay.store.base import Change, ChangeFeed, DeadEvent, follow

if TYPE_CHECKING:
    from relay.store.migrate import MigrationReport


@click.group()
def outbox() -> None:
    """The queue of accepted events."""


@outbox.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@config_option(required=True)
def outbox_stats(as_json: bool, config_path: str) -> None:
    """Count the events queued, retrying, delivered and dead, in total and per Space."""
    settings = load_settings(config_path, secrets=False)
    if outbox_exists(settings):
        stats = with_outbox(settings.database, lambda store: store.stats())
    else:
        click.echo(no_outbox(settings), err=True)
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
    settings = load_settings(config_path, secrets=False)
    dead: list[DeadEvent] = []
    if outbox_exists(settings):
        dead = with_outbox(settings.database, lambda store: store.dead_letters(limit + 1))
    else:
        click.echo(no_outbox(settings), err=True)
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
            shown(d.idempotency_key),
            str(d.attempts),
            "-" if d.last_status is None else str(d.last_status),
            shown(" ".join(d.last_message.split()), 500),
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
    settings = load_settings(config_path, secrets=False)
    if not outbox_exists(settings):
        raise click.ClickException(no_outbox(settings))
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
    settings = load_settings(config_path, secrets=False)
    if not outbox_exists(settings):
        raise click.ClickException(no_outbox(settings))

    async def tail(store: Outbox) -> None:
        if not isinstance(store, ChangeFeed):
            raise click.ClickException(f"{type(store).__name__} cannot be followed yet")
        click.echo(f"following {redacted(settings.database)} (Ctrl-C to stop)", err=True)
        async for change in follow(store, interval):
            click.echo(format_change(change))

    try:
        with_outbox(settings.database, tail)
    except KeyboardInterrupt:
        pass


def format_change(change: Change) -> str:
    """One line of `outbox tail`: time (UTC), Space, event, key, state, then the attempts."""
    when = datetime.fromtimestamp(change.at, UTC).isoformat(timespec="milliseconds")
    key = shown(change.idempotency_key)
    line = f"{when[:23]}Z  {change.space:<12} {change.event_name:<20} {key}"
    line += f"  {change.state}"
    if change.state != "accepted":
        line += f" attempts={change.attempts}"
    if change.last_status is not None or change.last_message:
        status = "-" if change.last_status is None else change.last_status
        line += f" last={status} {shown(' '.join(change.last_message.split()), 500)}".rstrip()
    return line


def _redis_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # The value is never shown back: a Redis URL may carry a password.
    if not config.is_redis_url(value):
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
    from relay.errors import MigrationError
    from relay.store.migrate import migrate  # imported late: it imports redis

    settings = load_settings(config_path, secrets=False)
    if config.is_redis_url(settings.database):
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

