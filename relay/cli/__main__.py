"""`python -m relay.cli`: the `comet-relay` command, for a checkout that is not installed."""

from relay.cli import main

main()
