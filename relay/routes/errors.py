"""The one place where an error becomes an HTTP answer.

A `Refused` is answered with its status, its headers and `{"message", "errors"?}`; anything
else that escapes a handler is a bug: it is logged with its traceback and answered 500 with a
message that says nothing was accepted. The Create Event endpoint renders its answers itself
(it is a bare ASGI app), with `render` and `INTERNAL_ERROR` from here.
"""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.errors import Refused
from relay.observe.shown import shown

log = logging.getLogger("relay")

INTERNAL_ERROR = "Internal error; the event was not accepted."


def render(err: Refused) -> bytes:
    """The JSON body of the answer to a refusal."""
    return json.dumps(err.body(), ensure_ascii=False, separators=(",", ":")).encode()


def internal_error() -> bytes:
    """The JSON body of a 500."""
    return json.dumps({"message": INTERNAL_ERROR}).encode()


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)  # registered for Refused only
    return Response(render(exc), exc.status, exc.headers, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    headers = dict(exc.headers or {})
    return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, shown(request.url.path))
    return Response(internal_error(), 500, media_type="application/json")


HANDLERS = {Refused: refused, HTTPException: http_error, Exception: unexpected}
"""Starlette's `exception_handlers` for the relay's app."""
