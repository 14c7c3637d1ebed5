"""What the commands share: the --config option, loading the settings, opening the outbox."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from relay import settings as config
from relay.errors import ConfigError, Unavailable
from relay.settings import Settings
from relay.store import Outbox, open_outbox

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


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


@contextmanager
def config_errors() -> Iterator[None]:
    """Turn a ConfigError into its problems on stderr and exit status 2, without a traceback."""
    try:
        yield
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(2) from None


def load_settings(config_path: str, *, secrets: bool = True) -> Settings:
    """The settings, or exit 2 with every problem. `secrets=False` for commands that only
    work on the outbox: they need no upstream token and no secret key."""
    with config_errors():
        return config.load(config_path, os.environ, secrets=secrets)



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


def no_outbox(settings: Settings) -> str:
    return f"no outbox at {settings.database} yet: the relay has not run"


