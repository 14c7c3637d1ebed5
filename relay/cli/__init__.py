"""The `comet-relay` command: serve, forward, keys, check, outbox.

Each command parses its options and calls into the package; the work lives elsewhere. This is
the one package that reads the process environment, and it hands it on as a mapping.
"""

from __future__ import annotations

import click

from relay.cli.check import check
from relay.cli.forward import forward
from relay.cli.keys import keys_group
from relay.cli.outbox import outbox
from relay.cli.serve import serve, server_options, welcome

__all__ = ["main", "server_options", "welcome"]


@click.group()
def main() -> None:
    """comet-relay: a self-hosted, first-party tracking relay for the Create Event API."""


for command in (serve, forward, keys_group, check, outbox):
    main.add_command(command)
