"""A fast local upstream for the drain benchmark: answers every POST with 202, records arrivals.

A bare ASGI callable (no framework, no JSON parsing) run by uvicorn, so that it is never the
bottleneck of a drain:

    python -m uvicorn --no-access-log --lifespan off --port 8765 bench.fast_upstream:app

  POST <any path>    202; the arrival time (Unix seconds, taken when the headers are in) and
                     the body are recorded under the request's path
  GET  /_arrivals?path=P   {"at": [arrival times at P...], "distinct": distinct bodies at P}

Each client of a benchmark posts to a path of its own, so one upstream serves several phases.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ACCEPTED = b'{"status":202,"message":"Event accepted and queued for processing."}'
JSON_HEADERS = [(b"content-type", b"application/json")]

arrivals: defaultdict[str, list[float]] = defaultdict(list)
bodies: defaultdict[str, set[bytes]] = defaultdict(set)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point: a POST is recorded and answered 202; GET /_arrivals reports."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        path = scope["path"]
        arrivals[path].append(time.time())
        bodies[path].add(await _body(receive))
        await _answer(send, 202, ACCEPTED)
    elif scope["path"] == "/_arrivals":
        path = parse_qs(scope["query_string"].decode()).get("path", [""])[0]
        report = {"at": arrivals.get(path, []), "distinct": len(bodies.get(path, ()))}
        await _answer(send, 200, json.dumps(report).encode())
    else:
        await _answer(send, 404, b'{"message":"not found"}')


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
