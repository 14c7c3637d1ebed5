"""`comet-relay keys`: making API keys."""

from __future__ import annotations

import click

from relay import settings as config
from relay.auth import api_keys


@click.group("keys")
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


