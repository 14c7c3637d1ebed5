"""GET /healthz, /readyz, /metrics and /openapi.json: what an operator or a balancer asks.

- /healthz: alive; the queue's depth and dead letters, the crawler events dropped, and the
  upstream state of each Space this process forwards. Both `serve` and `forward
  --metrics-port` answer it the same way.
- /readyz: 200 while the store answers, with each Space's figures and upstream state; 503
  when it does not.
- /metrics: the Prometheus text format (relay.observe.metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relay.observe.metrics import CONTENT_TYPE, scrape
from relay.rules.openapi import openapi_schema
from relay.settings import TRACK_PATH
from relay.wiring import Parts

log = logging.getLogger("relay")


def upstream_states(parts: Parts) -> dict[str, dict[str, object]]:
    """Each Space this process forwards: its upstream "answering", or "paused" (after a
    401/403) with `paused_until`."""
    if parts.forwarder is None:
        return {}
    return {
        sid: {"upstream": "paused", "paused_until": until} if until else {"upstream": "answering"}
        for sid, until in sorted(parts.forwarder.paused().items())
    }


def routes(parts: Parts, bot_events: Callable[[], int] = lambda: 0) -> list[BaseRoute]:
    """The health routes over `parts`; `bot_events()` counts the crawler events dropped."""
    openapi = openapi_schema(TRACK_PATH)

    async def healthz(request: Request) -> Response:
        stats = await parts.outbox.stats()
        return JSONResponse({
            "status": "ok",
            "queued": stats.queued,
            "dead": stats.dead,
            "bot_events_dropped": bot_events(),
            "spaces": upstream_states(parts),
        })

    async def readyz(request: Request) -> Response:
        return await readiness(parts)

    async def metrics(request: Request) -> Response:
        body = await scrape(parts.metrics, parts.outbox, parts.clock())
        return Response(body, media_type=CONTENT_TYPE)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


async def readiness(parts: Parts) -> Response:
    """200 when the store answers, with each Space's upstream state; 503 when it does not.

    A Space's upstream is "paused" (with `paused_until`) while a 401/403 holds its delivery,
    "answering" while its forwarder runs, and "not forwarded" in a process that does not
    forward (serve --no-forward) or for a Space without an upstream.
    """
    try:
        stats = await parts.outbox.stats()
    except Exception as exc:  # noqa: BLE001 - any failure of the store means not ready
        log.warning("readiness: the outbox does not answer: %s", exc)
        body = {"status": "unavailable", "store": f"not answering: {type(exc).__name__}"}
        return JSONResponse(body, status_code=503)
    upstream = upstream_states(parts)
    spaces: dict[str, object] = {}
    for sid in parts.settings.spaces:
        counts = stats.spaces.get(sid, {})
        entry: dict[str, object] = {"queued": counts.get("queued", 0), "dead": counts.get("dead", 0)}
        entry.update(upstream.get(sid, {"upstream": "not forwarded"}))
        spaces[sid] = entry
    return JSONResponse({"status": "ok", "store": "answering", "spaces": spaces})
