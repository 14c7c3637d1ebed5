"""GET /debug: the live event debugger, behind the admin token of `[relay] admin_token_env`.

Routes (all 404 when no admin token is configured, 401 without the token):

- GET /debug: the page (static/debug.html), or, without a session, a form that asks for the
  admin token and posts it to POST /debug/login. That sets a session cookie (random,
  signed with the token, valid for `SESSION_SECONDS`; HttpOnly, path /debug,
  SameSite=Strict) and redirects to the page by a relative address: the token is never in a
  URL, so no access log, proxy log or browser history keeps it. `Authorization: Bearer
  <admin token>` works everywhere too.
- GET /debug/events: server-sent events, one `sighting` per step of an event (see
  `relay.journal.Sighting`), starting with the recent ones; `Last-Event-ID` resumes.
- GET /debug/search?q=<id>: every sighting of an idempotency key / event id (or outbox id)
  in this process's ring buffer, and the dead letters that match it.
- GET /debug/chart: received and delivered events and the queue depth per minute, last hour.
- POST /debug/replay/{id}: put the dead event with outbox id `id` back in the queue. With the
  cookie, the request must also come from the page's own origin (Origin header): a form on
  another site cannot replay; the login must too.

Anything malformed (a token that is not ASCII, a cookie that is not a session, a
`Last-Event-ID` that is not a small number, an id too large for the outbox) is refused like
a wrong one (401, 400 or 404), never a 500.

What a process did not see (another worker's sightings) is not in its ring buffer; the
dead letters come from the shared outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from relay.observe.journal import Journal
from relay.server.body import receive_body
from relay.store.base import Outbox

log = logging.getLogger("relay.debug")

COOKIE = "comet_admin"
BACKLOG = 200  # sightings a new follower gets first
KEEPALIVE = 5.0  # seconds between SSE comments on a quiet stream
# A stream ends after this long and the browser's EventSource reconnects with Last-Event-ID:
# an open stream would otherwise hold up the server's graceful shutdown for good.
STREAM_SECONDS = 15.0
SAMPLE_EVERY = 20.0  # seconds between queue depth samples
SESSION_SECONDS = 8 * 3600  # a login lasts a working day
MAX_ID = 2**63 - 1  # outbox ids and Last-Event-ID are 64-bit integers
MAX_QUERY = 256  # characters of a search: the longest key is 255
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Debugger:
    """The debugger's routes over one Journal and the outbox."""

    def __init__(
        self,
        token: str,
        journal: Journal,
        outbox: Outbox,
        page: bytes | None,
        clock: Callable[[], float],
    ) -> None:
        self._token = token.encode()
        self.journal = journal
        self.outbox = outbox
        self.page = page
        self.clock = clock
        self._sampler: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        """The /debug routes, to add to the app."""
        return [
            Route("/debug", self.page_handle, methods=["GET"]),
            Route("/debug/login", self.login, methods=["POST"]),
            Route("/debug/events", self.events, methods=["GET"]),
            Route("/debug/search", self.search, methods=["GET"]),
            Route("/debug/chart", self.chart, methods=["GET"]),
            Route("/debug/replay/{id:int}", self.replay, methods=["POST"]),
        ]

    # lifecycle: sample the queue depth for the chart ---------------------------------------

    def start(self) -> None:
        """Start sampling the queue depth every SAMPLE_EVERY seconds."""
        self._sampler = asyncio.create_task(self._sample_loop())

    async def stop(self) -> None:
        """Stop sampling and end every event stream."""
        self.journal.close()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)

    async def _sample_loop(self) -> None:
        while True:
            await self._sample()
            await asyncio.sleep(SAMPLE_EVERY)

    async def _sample(self) -> None:
        try:
            stats = await self.outbox.stats()
        except Exception:  # the chart misses a point; /readyz tells why
            log.warning("queue depth sample failed", exc_info=True)
            return
        self.journal.depth(self.clock(), stats.queued)

    # auth ------------------------------------------------------------------------------

    def _is_token(self, given: str) -> bool:
        """Whether `given` is the admin token, in constant time; any text may be given."""
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)

    def _bearer(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._is_token(given.strip())

    def _session(self, expires: int, nonce: str) -> str:
        mac = hmac.new(self._token, f"{expires}.{nonce}".encode(), hashlib.sha256).hexdigest()
        return f"{expires}.{nonce}.{mac}"

    def _authorized(self, request: Request) -> bool:
        if self._bearer(request):
            return True
        value = request.cookies.get(COOKIE, "")
        expires, _, rest = value.partition(".")
        nonce = rest.partition(".")[0]
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        if int(expires) < self.clock():
            return False
        expected = self._session(int(expires), nonce)
        return hmac.compare_digest(value.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))

    def _refuse(self, request: Request) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="comet-relay debug"', **_PAGE_HEADERS}
        if request.url.path.endswith("/debug") and request.method == "GET":
            return HTMLResponse(_LOGIN_PAGE, 401, {**headers, **_LOGIN_HEADERS})
        return JSONResponse(
            {"message": "The debugger needs the admin token: sign in at /debug, "
                        "or send Authorization: Bearer <token>."},
            401,
            headers,
        )

    # handlers --------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """The login form's POST: the token in the body, never in the URL."""
        if not _same_origin(request):
            return JSONResponse({"message": "Sign in from the debugger's own page."}, 403)
        body = await receive_body(request.receive, request.headers.get("content-length"), 4096)
        given = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4).get("token", [""])[0]
        if not self._is_token(given):
            page = _LOGIN_PAGE.replace("<!--error-->", _WRONG)
            return HTMLResponse(page, 401, {**_PAGE_HEADERS, **_LOGIN_HEADERS})
        expires = int(self.clock()) + SESSION_SECONDS
        answer = Response(status_code=303, headers={"Location": _page_path(request)})
        answer.set_cookie(
            COOKIE, self._session(expires, secrets.token_urlsafe(16)), max_age=SESSION_SECONDS,
            path=request.scope.get("root_path", "") + "/debug", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )
        answer.headers["Cache-Control"] = "no-store"
        return answer

    async def page_handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request)
        if self.page is None:
            return JSONResponse({"message": "static/debug.html is missing from this installation."}, 404)
        return Response(self.page, headers=_PAGE_HEADERS, media_type="text/html; charset=utf-8")

    async def events(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request)
        last = request.headers.get("last-event-id", "")
        small = last.isascii() and last.isdigit() and len(last) <= 18
        after = int(last) if small else max(0, self.journal.seq - BACKLOG)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._stream(after), media_type="text/event-stream", headers=headers)

    async def _stream(self, after: int) -> AsyncIterator[str]:
        journal = self.journal
        loop = asyncio.get_running_loop()
        end = loop.time() + STREAM_SECONDS
        yield "retry: 500\n\n"
        while not journal.closed and loop.time() < end:
            for sighting in journal.since(after, BACKLOG):
                after = sighting.seq
                yield f"id: {after}\nevent: sighting\ndata: {json.dumps(sighting.as_dict())}\n\n"
            before = journal.seq
            await journal.wait(after, KEEPALIVE)
            if journal.seq == before and not journal.closed:
                yield ": keepalive\n\n"

    async def search(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request)
        text = request.query_params.get("q", "").strip()
        if len(text) > MAX_QUERY:
            return JSONResponse({"message": f"An id has at most {MAX_QUERY} characters."}, 400)
        if not text:
            return JSONResponse({"message": "Give an event id, idempotency key or outbox id as q."}, 400)
        seen = [s.as_dict() for s in self.journal.find(text)]
        dead = [
            {
                "outbox_id": d.id, "space": d.space, "event_name": d.event_name, "key": d.idempotency_key,
                "attempts": d.attempts, "status": d.last_status, "reason": d.last_message,
                "received_at": d.received_at, "died_at": d.died_at,
            }
            for d in await self.outbox.dead_letters()
            if d.idempotency_key == text or str(d.id) == text
        ]
        return JSONResponse({"q": text, "sightings": seen, "dead": dead}, headers={"Cache-Control": "no-store"})

    async def chart(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request)
        await self._sample()
        return JSONResponse({"minutes": self.journal.chart(self.clock())}, headers={"Cache-Control": "no-store"})

    async def replay(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request)
        if not self._bearer(request) and not _same_origin(request):
            return JSONResponse({"message": "Replay from the debugger page only (its own origin)."}, 403)
        event_id = int(request.path_params["id"])
        if event_id > MAX_ID:
            return JSONResponse({"message": f"No dead event has outbox id {event_id}.", "replayed": 0}, 404)
        dead = {d.id: d for d in await self.outbox.dead_letters()}
        replayed = await self.outbox.replay([event_id], self.clock())
        if not replayed:
            return JSONResponse({"message": f"No dead event has outbox id {event_id}.", "replayed": 0}, 404)
        d = dead.get(event_id)
        if d is not None:
            self.journal.add(self.clock(), d.space, "debugger", "replayed", d.idempotency_key,
                             outbox_id=d.id, event_name=d.event_name)
        log.info("dead event %s replayed from the debugger", event_id)
        return JSONResponse({"replayed": replayed})


def _page_path(request: Request) -> str:
    """The page's path, wherever the relay is mounted: a relative redirect, never built from
    the request's Host header."""
    return request.scope.get("root_path", "") + "/debug"


# A form's POST carries `Origin: null` under `no-referrer`; the login checks its Origin.
_LOGIN_HEADERS = {"Referrer-Policy": "same-origin"}
_WRONG = '<p role="alert">That is not the admin token.</p>'
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>comet-relay debugger: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>comet-relay debugger</h1><!--error-->
<form method="post" action="debug/login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></main></body></html>
"""


def _same_origin(request: Request) -> bool:
    """Whether the request's Origin is this server's own (what a browser sends on a POST)."""
    origin = request.headers.get("origin")
    return origin is not None and origin == f"{request.url.scheme}://{request.url.netloc}"


def not_configured_routes() -> list[BaseRoute]:
    """/debug and below answer 404 when no admin token is configured."""

    async def absent(request: Request) -> Response:
        return JSONResponse(
            {"message": "The debugger is off: set [relay] admin_token_env to enable it."}, 404
        )

    return [
        Route("/debug", absent, methods=["GET"]),
        Route("/debug/{rest:path}", absent, methods=["GET", "POST"]),
    ]
