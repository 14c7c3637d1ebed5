"""comet-relay mounted under /relay of an existing Starlette app: same origin, same process.

Run it from a directory where `relay` is importable (comet-relay installed):

    RELAY_CONFIG=/etc/comet-relay/relay.toml uvicorn --app-dir docs/examples mount_starlette:app

The Create Event API is then at /relay/public-api/v1/events/track, the snippet at
/relay/comet.js (its events go to /relay/e beside it). The relay's lifespan (its outbox, rate
limiter and forwarder) runs inside the host app's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from relay.app import create_app
from relay.settings import load

relay = create_app(load(os.environ.get("RELAY_CONFIG", "relay.toml"), os.environ))


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the shop")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with relay.router.lifespan_context(relay):
        yield


app = Starlette(routes=[Route("/", home), Mount("/relay", app=relay)], lifespan=lifespan)
