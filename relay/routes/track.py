"""POST /public-api/v1/events/track: the Create Event API, for servers with a secret key.

In the contract's order of checks: authenticate (401/403), rate-limit (429), read the body
(413, 408), check (422), then `Intake.accept` makes it durable and the answer is 202, with
`Idempotent-Replayed: true` for a duplicate. It is the relay's hot path, so `CreateEvent` is
a bare ASGI app: it reads the headers it needs from the scope, the body from `receive`, and
sends its answer itself, without a Starlette Request or Response (that halves its cost per
request; see bench/README.md). `TrackFirst` sends it its requests before Starlette's routing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from relay import rules
from relay.auth.api_keys import KeyRing, authorize
from relay.errors import Forbidden, Refused
from relay.intake import UNKNOWN_SPACE, Intake, Source
from relay.limits.base import Decision
from relay.observe.shown import shown
from relay.routes.errors import internal_error, render
from relay.rules.openapi import HEADER_SAFE_PATTERN
from relay.server.body import CLOSE, receive_body
from relay.settings import Settings, Space
from relay.store.base import Enqueued, Outcome

ACCEPTED = {
    "status": 202,
    "message": "Event accepted and queued for processing.",
    "outcome": "accepted",
}
_ACCEPTED_BODY = json.dumps(ACCEPTED).encode()  # the same for every new event: rendered once
_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"idempotent-replayed", b"true")
_HEADER_SAFE = re.compile(HEADER_SAFE_PATTERN)
_ANONYMOUS = Decision(True, 1000, 1000, 0)  # the rate-limit headers before a Space is known

log = logging.getLogger("relay")


class CreateEvent:
    """The Create Event API as an ASGI app; every answer, refusals included, is sent by the
    app itself. `timed(seconds)` is told how long each request took."""

    def __init__(
        self, settings: Settings, intake: Intake, timed: Callable[[float], None]
    ) -> None:
        self.settings = settings
        self.keys = KeyRing(settings.spaces.values())
        self.intake = intake
        self.timed = timed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        authorization = declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
        try:
            status, raw, body = await self.answer(authorization, declared, receive)
        except Exception:  # a bug: the sender still gets JSON, and the log has the traceback
            log.exception("unexpected error on POST %s", shown(scope.get("path")))
            status, raw, body = 500, [], internal_error()
        raw.append(_JSON)
        raw.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
        self.timed(time.perf_counter() - start)

    async def answer(
        self, authorization: str | None, declared: str | None, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The status, headers (as ASGI sends them) and body of the answer to one request."""
        decision = _ANONYMOUS
        space: Space | None = None
        read = False
        try:
            space, key = self.keys.authenticate(authorization)
            bucket, limit = f"space:{space.id}", space.rate_limit_per_minute
            try:
                authorize(space, key)
            except Forbidden:
                decision = await self.intake.peek(bucket, limit)
                raise
            decision = await self.intake.take(
                bucket, limit, f"Rate limit of {limit} requests per minute exceeded"
            )
            raw = await receive_body(
                receive, declared, self.settings.max_body_bytes,
                seconds=self.settings.body_timeout_seconds,
            )
            read = True
            body = rules.parse_body(raw)
            check = functools.partial(rules.validate, custom_events=space.custom_events)
            accepted = await self.intake.accept(space, Source.API, [body], check, whole=True)
        except Refused as err:
            self.intake.refused(Source.API, space.id if space else UNKNOWN_SPACE, err)
            refusal = {**decision.headers(), **err.headers}  # a 429's own figures win
            if not read and declared != "0":
                refusal.update(CLOSE)
            return err.status, _raw(refusal), render(err)
        headers = decision.raw_headers()
        (entry,), (result,) = accepted.entries, accepted.results
        duplicate = result.outcome is Outcome.DUPLICATE
        if duplicate:
            headers.append(_REPLAYED)
        # A key assigned to a duplicate was never stored; a key that is no safe header value
        # (non-ASCII, control characters: header injection) is only in the stored event.
        idem = entry.idempotency_key
        sent_key = body.get("idempotency_key") is not None
        if (not duplicate or sent_key) and _HEADER_SAFE.fullmatch(idem):
            headers.append((b"idempotency-key", idem.encode("latin-1")))
        return 202, headers, _answer(result)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _answer(result: Enqueued) -> bytes:
    """The body of a 202: what became of the event, in words and as `outcome`."""
    if result.outcome is Outcome.QUEUED:
        return _ACCEPTED_BODY
    if result.outcome is Outcome.MERGED:
        body: dict[str, object] = {
            "status": 202,
            "message": "Event accepted and merged with its browser twin: one event will be "
            "sent, with this event's fields and the browser's visit.",
            "outcome": "merged",
            "merged_with": result.other,
        }
    else:
        body = {
            "status": 202,
            "message": "A duplicate of an earlier event of this Space (the same event name "
            "with the same idempotency_key, or order_id): not queued again.",
            "outcome": "duplicate",
            "duplicate_of": result.other,
        }
    return json.dumps(body, ensure_ascii=False).encode()


class TrackFirst:
    """Sends a POST to the Create Event path straight to its endpoint, ahead of Starlette.

    The endpoint answers every request itself (refusals and its own failures included) and
    times itself, so the routing, the middleware (error pages, request timer) and the
    exception handlers are skipped on the relay's busiest path. Mounted under a prefix, the
    path is matched below it. `relay.app.RelayApp` asks `takes(scope)` first thing.
    """

    def __init__(self, track: ASGIApp, path: str) -> None:
        self.track = track
        self.path = path

    def takes(self, scope: Scope) -> bool:
        """Whether the request is a POST to the Create Event path."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return bool(path == self.path)
