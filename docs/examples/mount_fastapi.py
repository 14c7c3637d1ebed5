"""comet-relay mounted under /relay of an existing FastAPI app: same origin, same process.

Run it from a directory where `relay` is importable (comet-relay installed, and fastapi):

    RELAY_CONFIG=/etc/comet-relay/relay.toml uvicorn --app-dir docs/examples mount_fastapi:app

The Create Event API is then at /relay/public-api/v1/events/track, the snippet at
/relay/comet.js (its events go to /relay/e beside it). The relay's lifespan (its outbox, rate
limiter and forwarder) runs inside the host app's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from relay.app import create_app
from relay.settings import load

relay = create_app(load(os.environ.get("RELAY_CONFIG", "relay.toml"), os.environ))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with relay.router.lifespan_context(relay):
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/relay", relay)


@app.get("/")
async def home() -> dict[str, str]:
    return {"shop": "open"}
