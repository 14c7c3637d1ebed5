"""Run the relay or the bare baseline with the uvicorn options of `comet-relay serve`.

    python -m bench.server relay|bare --port P [--workers N]

The relay is `bench.relay_app:make` (the config named by $BENCH_RELAY_CONFIG); the baseline
is `bench.bare_app:app`. The relay with `--workers N` above 1 runs under its own master, as
`comet-relay serve --workers N` does; the baseline under uvicorn's. Both get `relay.cli.server_options`, so the HTTP protocol (with its
bounds on request heads), proxy-header handling and shutdown are the same for both; only the
access log is off and the log level is warning.
"""

from __future__ import annotations

import argparse

import uvicorn

from relay.cli import server_options
from relay.settings import Settings

APPS = {"relay": ("bench.relay_app:make", True), "bare": ("bench.bare_app:app", False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=sorted(APPS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    app, factory = APPS[args.target]
    options = server_options(Settings(), "127.0.0.1", args.port)
    options["log_level"] = "warning"
    if args.target == "relay" and args.workers > 1:  # as `comet-relay serve --workers N` runs
        raise SystemExit(relay_workers(args.workers, options))
    uvicorn.run(app, factory=factory, workers=args.workers, **options)  # type: ignore[arg-type]


def relay_workers(workers: int, options: dict[str, object]) -> int:
    """The relay's own master (relay.cli.workers): shared limiter, one forwarder."""
    import dataclasses
    import os

    from relay.cli.workers import run_workers
    from relay.settings import load

    settings = load(os.environ["BENCH_RELAY_CONFIG"], os.environ)
    return run_workers(dataclasses.replace(settings, workers=workers), options, forward=True)


if __name__ == "__main__":
    main()
