"""A fault-injecting Create Event upstream, run as its own process by the tests.

    python -m tests.fake_upstream --port 8765

It records every request and answers from a script that the test controls:
  POST /_control {"script": [rule, ...], "default": rule}   rules are used once each, in order,
                                                          then `default` (202) for the rest
  POST /_control {"schedule": [{"start": T0, "end": T1, "rule": rule}, ...]}
                 a fault for every request that arrives in [T0, T1) (Unix seconds)
  POST /_control {"match": [{"contains": "text", "rule": rule}, ...]}
                 the answer for a request whose body holds `text`
  GET  /_received                                         every request seen, with its outcome
  POST /_reset                                            forget everything
A rule is {"status": 500}, {"status": 429, "retry_after": "2"}, {"status": 401},
{"status": 422, "message": "..."}, {"delay": 3.0} (answer late, then as the rest of the rule
says), {"drop": true} (cut the connection before a complete answer) or, with any of these,
{"gzip": true} (the answer's body gzip-compressed, with its Content-Encoding).

The first that applies answers: a script rule, a schedule window, a match, the default. A
schedule window's rule with neither a status nor a drop only delays: the answer then comes
from a match or the default, so a slow spell does not turn a refusal into an acceptance.
A delayed request's record gets `"answered": false` when the client hung up meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class State:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.default: dict[str, Any] = {"status": 202}
        self.schedule: list[dict[str, Any]] = []
        self.match: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    def rule_for(self, body: str, now: float) -> dict[str, Any]:
        """The rule that answers a request with `body` arriving at `now` (see the docstring)."""
        if self.script:
            return self.script.pop(0)
        window = next((w["rule"] for w in self.schedule if w["start"] <= now < w["end"]), None)
        if window is not None and ("status" in window or window.get("drop")):
            return dict(window)
        rule = next((m["rule"] for m in self.match if m["contains"] in body), self.default)
        if window is not None:
            delay = float(window.get("delay", 0.0)) + float(rule.get("delay", 0.0))
            return {**rule, "delay": delay}
        return rule


state = State()


async def track(request: Request) -> Response:
    body = await request.body()
    text = body.decode("utf-8", "replace")
    now = time.time()
    rule = state.rule_for(text, now)
    status = int(rule.get("status", 202))
    record: dict[str, Any] = {
        "at": now,
        "authorization": request.headers.get("authorization"),
        "user_agent": request.headers.get("user-agent"),
        "content_type": request.headers.get("content-type"),
        "peer_port": request.client.port if request.client else None,  # one per connection
        "body": text,
        "status": "dropped" if rule.get("drop") else status,
    }
    state.received.append(record)
    if rule.get("delay"):
        record["delay"] = float(rule["delay"])
        await asyncio.sleep(float(rule["delay"]))
        if await request.is_disconnected():
            record["answered"] = False
    if rule.get("drop"):
        return Dropped()
    headers = {}
    if "retry_after" in rule:
        headers["Retry-After"] = str(rule["retry_after"])
    if status == 202:
        answer: dict[str, Any] = {"status": 202, "message": "Event queued"}
    else:
        answer = {"message": rule.get("message", f"fake upstream says {status}")}
    if rule.get("gzip"):
        headers["Content-Encoding"] = "gzip"
        content = gzip.compress(json.dumps(answer).encode())
        return Response(content, status, headers, media_type="application/json")
    return JSONResponse(answer, status, headers)


class Dropped(Response):
    """Start an answer that promises a body, send part of it, then fail: the connection drops."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"sta', "more_body": True})
        raise ConnectionAbortedError("fake upstream dropped the connection on purpose")


async def control(request: Request) -> Response:
    data = await request.json()
    if "script" in data:
        state.script = list(data["script"])
    if "default" in data:
        state.default = dict(data["default"])
    if "schedule" in data:
        state.schedule = [dict(w) for w in data["schedule"]]
    if "match" in data:
        state.match = [dict(m) for m in data["match"]]
    return JSONResponse({"ok": True})


async def received(request: Request) -> Response:
    return JSONResponse(state.received)


async def reset(request: Request) -> Response:
    state.__init__()  # type: ignore[misc]
    return JSONResponse({"ok": True})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/public-api/v1/events/track", track, methods=["POST"]),
    Route("/_control", control, methods=["POST"]),
    Route("/_received", received),
    Route("/_reset", reset, methods=["POST"]),
    Route("/healthz", healthz),
])


def events(records: list[dict[str, Any]], status: int | str | None = None) -> list[dict[str, Any]]:
    """The JSON bodies of `records`, optionally only those answered with `status`."""
    return [json.loads(r["body"]) for r in records if status is None or r["status"] == status]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
