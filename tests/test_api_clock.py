"""The inbound rate limit through the app, with an injected clock instead of waiting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from relay.app import create_app
from relay.settings import load
from tests.support import Space, write_config

PATH = "/public-api/v1/events/track"
EVENT = {"event_name": "contact", "email": "c@l.ock"}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_the_space_limit_refills_with_time_not_with_requests(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space(extra="rate_limit_per_minute = 2")])
    clock = Clock()
    app = create_app(load(str(config), os.environ), clock=clock, forward=False)

    async def scenario() -> list[tuple[int, str, str | None]]:
        seen = []
        await app.state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
                headers = {"Authorization": "Bearer key-acme-write"}

                async def send() -> None:
                    r = await client.post(PATH, json=EVENT, headers=headers)
                    seen.append((r.status_code, r.headers["X-RateLimit-Remaining"], r.headers.get("Retry-After")))

                await send()
                await send()
                await send()  # over: 2 a minute
                clock.t += 29.0  # 30 s refill one request
                await send()
                clock.t += 1.0
                await send()
                await send()
        finally:
            await app.state.outbox.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] == (202, "1", None)
    assert seen[1] == (202, "0", None)
    assert seen[2] == (429, "0", "30")
    assert seen[3] == (429, "0", "1")  # 29 s later: not yet, and it says how long to wait
    assert seen[4][0] == 202
    assert seen[5][0] == 429
