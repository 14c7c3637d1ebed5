"""The Create Event endpoint: authenticate, rate-limit, read, check, enqueue, answer 202.

It is the relay's hot path, so `CreateEvent` is a bare ASGI app: it reads the headers it needs
from the scope, the body from `receive`, and sends its answer itself, without building a
Starlette Request or Response (that halves its cost per request; see bench/README.md).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from relay import rules
from relay.auth import KeyRing, authorize
from relay.errors import (
    Disconnected,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Refused,
    ServiceUnavailable,
    Unavailable,
)
from relay.limits import DEFAULT_BODY_SECONDS, bounded_receive
from relay.ratelimit import Decision, RateLimiter
from relay.rules.events import new_event
from relay.rules.openapi import HEADER_SAFE_PATTERN
from relay.settings import Settings
from relay.store.base import Outbox

ACCEPTED = {"status": 202, "message": "Event accepted and queued for processing."}
_ACCEPTED_BODY = json.dumps(ACCEPTED).encode()  # the same for every 202: rendered once
_JSON = (b"content-type", b"application/json")
_HEADER_SAFE = re.compile(HEADER_SAFE_PATTERN)
INTERNAL_ERROR = "Internal error; the event was not accepted."

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
log = logging.getLogger("relay")


def ignore_report(*args: object) -> None:
    """The default of a report hook: nobody listens."""


async def limited(decided: Awaitable[Decision]) -> Decision:
    """A rate limiter's decision; 503 when its store cannot be reached."""
    try:
        return await decided
    except Unavailable as exc:
        raise ServiceUnavailable(
            "The rate limiter's store could not be reached; retry the request."
        ) from exc


def refusal_reason(err: Refused) -> str:
    """The `reason` of a refused request: its first refused field, else the kind of refusal."""
    if err.errors:
        return next(iter(err.errors))
    return _REASONS.get(err.status, "body")


_REASONS = {
    401: "auth", 403: "auth", 408: "timeout", 413: "too_large", 429: "rate_limit", 503: "unavailable"
}
# A refusal sent before the body was read closes the connection: otherwise the server would
# go on reading (and dropping) whatever the sender still streams, endlessly if it is chunked.
CLOSE = {"Connection": "close"}


async def read_body(
    request: Request,
    limit: int,
    advice: str = "send one event per request.",
    seconds: float = DEFAULT_BODY_SECONDS,
) -> bytes:
    """The body of a Starlette request; see `receive_body`."""
    declared = request.headers.get("content-length")
    return await receive_body(request.receive, declared, limit, advice, seconds)


async def receive_body(
    receive: Receive,
    declared: str | None,
    limit: int,
    advice: str = "send one event per request.",
    seconds: float = DEFAULT_BODY_SECONDS,
) -> bytes:
    """The request body from ASGI `receive`, refused with 413 as soon as it is known to exceed
    `limit` bytes (`declared` is the Content-Length header, if any), and with 408 when the
    whole of it has not arrived within `seconds` (a slow-loris upload). Both close the
    connection.

    The 413 message ends with `advice` on what to send instead.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
    receive = bounded_receive(receive, seconds)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        if len(body) > limit:
            raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
        return body  # the usual case: the whole body in one message
    buffer = bytearray()
    while True:
        if message["type"] != "http.request":
            # The sender hung up mid-body: nothing was accepted and nobody reads the answer.
            raise Disconnected()
        buffer += message.get("body", b"")
        if len(buffer) > limit:
            raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
        if not message.get("more_body", False):
            return bytes(buffer)
        message = await receive()


def _header_safe(value: str) -> bool:
    """Printable ASCII with no space at either end: sendable as an HTTP header value as is
    (the pattern /openapi.json gives the header)."""
    return _HEADER_SAFE.fullmatch(value) is not None


def _too_large(limit: int, advice: str) -> str:
    return f"The body is larger than this relay's limit of {limit} bytes: {advice}"


class CreateEvent:
    """POST /public-api/v1/events/track as an ASGI app, in the order of checks CONTRACT.md §1
    gives. Every answer, refusals included, is sent by the app itself."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        outbox: Outbox,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.spaces.values())
        self.limiter = limiter
        self.outbox = outbox
        self.clock = clock
        self.anonymous = Decision(True, 1000, 1000, 0)
        self.on_queued: Callable[[str], None] = lambda space_id: None
        # (space id, outcome, reason, idempotency key): see relay.metrics for the outcomes
        self.on_received: Callable[[str, str, str, str | None], None] = ignore_report
        # (seconds): the time of each request, for the request-duration histogram
        self.on_timed: Callable[[float], None] = ignore_report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        authorization = declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        try:
            status, headers, body = await self.answer(authorization, declared, receive)
        except Exception:  # a bug: the sender still gets JSON, and the log has the traceback
            log.exception("unexpected error on POST %s", scope.get("path"))
            status, headers = 500, {}
            body = json.dumps({"message": INTERNAL_ERROR}).encode()
        raw = [_JSON, (b"content-length", str(len(body)).encode())]
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
        self.on_timed(time.perf_counter() - start)

    async def answer(
        self, authorization: str | None, declared: str | None, receive: Receive
    ) -> tuple[int, dict[str, str], bytes]:
        """The status, headers and body of the answer to one request."""
        decision = self.anonymous
        space_id = "-"
        read = False
        try:
            space, key = self.keys.authenticate(authorization)
            space_id = space.id
            bucket, limit = f"space:{space.id}", space.rate_limit_per_minute
            try:
                authorize(space, key)
            except Forbidden:
                decision = await limited(self.limiter.peek(bucket, limit))
                raise
            decision = await limited(self.limiter.take(bucket, limit))
            if not decision.allowed:
                raise RateLimited(
                    f"Rate limit of {space.rate_limit_per_minute} requests per minute exceeded; "
                    f"retry after {decision.retry_after} s."
                )
            raw = await receive_body(
                receive, declared, self.settings.max_body_bytes,
                seconds=self.settings.body_timeout_seconds,
            )
            read = True
            event = rules.check(rules.parse_body(raw), space.custom_events)
            sent_key = event.get("idempotency_key")
            now = self.clock()
            entry = new_event(space, event, now)
            try:
                (queued,) = await self.outbox.enqueue([entry], now)
            except Exception as exc:  # the store failed: nothing was acknowledged
                raise ServiceUnavailable("The event could not be stored; retry the request.") from exc
        except Refused as err:
            self.on_received(space_id, "rejected", refusal_reason(err), None)
            headers = {**err.headers, **decision.headers()}
            if not read and declared != "0":
                headers.update(CLOSE)
            return err.status, headers, json.dumps(err.body(), ensure_ascii=False).encode()
        headers = decision.headers()
        if queued:
            self.on_queued(space.id)
        else:
            headers["Idempotent-Replayed"] = "true"
        self.on_received(space.id, "accepted" if queued else "duplicate", "", entry.idempotency_key)
        idempotency_key = entry.idempotency_key
        # A key assigned to a duplicate was never stored; a key that is no safe header value
        # (non-ASCII, control characters: header injection) is only in the stored event.
        if (queued or sent_key is not None) and _header_safe(idempotency_key):
            headers["Idempotency-Key"] = idempotency_key
        return 202, headers, _ACCEPTED_BODY
