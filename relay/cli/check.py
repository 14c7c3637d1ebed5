"""`comet-relay check`: validating a relay.toml."""

from __future__ import annotations

import click

from relay.cli.common import config_option, load_settings
from relay.observe.shown import redacted
from relay.settings import Settings


@click.command()
@config_option(required=True)
def check(config_path: str) -> None:
    """Validate a relay.toml and name every problem (exit status 2 if there is any)."""
    click.echo(summary(load_settings(config_path)))


def summary(settings: Settings) -> str:
    """A few lines on a valid configuration: the database and each Space with its upstream,
    passwords of URLs left out."""
    lines = [f"{settings.source}: OK", f"  database: {redacted(settings.database)}"]
    lines.append(f"  spaces: {len(settings.spaces)}")
    for space in settings.spaces.values():
        state = "active" if space.active else "inactive"
        upstream = redacted(space.upstream_url or "") or "no upstream (events stay queued)"
        lines.append(f"    {space.id}: {state}, {len(space.api_keys)} API key(s), {upstream}")
    return "\n".join(lines)


