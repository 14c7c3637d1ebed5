"""The baseline: bare Starlette endpoints (the Create Event path and /e) that only parse the
JSON body and answer 202."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def track(request: Request) -> Response:
    event = json.loads(await request.body())
    return JSONResponse({"status": 202, "message": "ok", "n": len(event)}, status_code=202)


async def collect(request: Request) -> Response:
    batch = json.loads(await request.body())
    return JSONResponse({"accepted": len(batch["e"])}, status_code=202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/public-api/v1/events/track", track, methods=["POST"]),
        Route("/e", collect, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)
