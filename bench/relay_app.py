"""The relay as a uvicorn factory, so the benchmark runs it with the baseline's exact flags."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from relay.app import create_app
from relay.settings import load


def make() -> Starlette:
    return create_app(load(os.environ["BENCH_RELAY_CONFIG"], os.environ))
