"""The browser's routes: the snippet, the collect endpoint, and the demo page.

POST <collect_path>?k=<site key> takes a batch `{"e": [event, ...]}` from the snippet. Checks,
in order: the Origin is an allowed origin of the Space named by the site key (else 403, before
anything else is read), the per-client-IP rate limit (429), the body size and the batch size
(413), then each event on its own. Every answer to an allowed origin carries CORS headers with
credentials and a refreshed visitor cookie. A well-formed batch is answered 202

    {"accepted": N, "duplicates": M, "refused": [{"index": i, "event_id": ..., "errors": {...}}]}

even when no event was accepted; a crawler's batch is counted, dropped and answered 202 with
`"bot": true`. The Content-Type is not checked: the snippet sends text/plain (no preflight),
other senders may send application/json.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.resources
import logging
import re
from collections.abc import Callable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from relay import enrich
from relay.api import CLOSE, ignore_report, new_event, read_body, refusal_reason
from relay.errors import Forbidden, RateLimited, RelayError, Unavailable
from relay.ratelimit import RateLimiter
from relay.settings import Settings, Space
from relay.store.base import Outbox
from relay.tokens import VisitorTokens, cookie_header

log = logging.getLogger("relay.browser")

SNIPPET_FILES = ("comet.min.js",)  # built from static/src/ by scripts/build-snippet
CORS_MAX_AGE = "7200"  # Chromium's ceiling for caching a preflight
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def static_file(name: str) -> bytes | None:
    """The bytes of `name` in the package's static files, or None if it is not there."""
    root: Traversable
    try:
        root = importlib.resources.files("relay.static")
    except ModuleNotFoundError:  # a source checkout, not installed: static/ is beside relay/
        root = Path(__file__).resolve().parent.parent / "static"
    item = root / name
    return item.read_bytes() if item.is_file() else None


class Snippet:
    """GET <snippet_path> and its aliases: the script, read once, gzipped once, with an ETag."""

    def __init__(self, body: bytes | None) -> None:
        self.body = body
        if body is None:
            log.warning("static/comet.js is missing from this installation: the snippet is 404")
            return
        digest = hashlib.sha256(body).hexdigest()[:32]
        self.etag = f'"{digest}"'
        self.gzip_etag = f'"{digest}-gz"'  # another representation, so another strong ETag
        compressed = gzip.compress(body, compresslevel=9, mtime=0)
        self.gzipped = compressed if len(compressed) < len(body) else None

    @classmethod
    def from_package(cls) -> Snippet:
        """The snippet as shipped: static/comet.min.js if built, else static/comet.js."""
        for name in SNIPPET_FILES:
            body = static_file(name)
            if body is not None:
                return cls(body)
        return cls(None)

    async def handle(self, request: Request) -> Response:
        if self.body is None:
            return JSONResponse({"message": "The snippet is not part of this installation."}, 404)
        use_gzip = self.gzipped is not None and accepts_gzip(request.headers.get("accept-encoding"))
        etag = self.gzip_etag if use_gzip else self.etag
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=3600",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if etag_matches(request.headers.get("if-none-match"), (self.etag, self.gzip_etag)):
            return Response(status_code=304, headers=headers)
        body = self.body
        if use_gzip and self.gzipped is not None:
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type="application/javascript; charset=utf-8")


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header allows gzip (by name or `*`, with a q above 0)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def etag_matches(if_none_match: str | None, etags: tuple[str, ...]) -> bool:
    """Whether If-None-Match names one of `etags` (weak comparison, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in wanted or any(tag in wanted for tag in etags)


class Collect:
    """POST <collect_path>?k=<site key>, and its CORS preflight (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        outbox: Outbox,
        tokens: VisitorTokens,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.sites: Mapping[str, Space] = {
            space.site_key: space for space in settings.spaces.values() if space.site_key
        }
        self.limiter = limiter
        self.outbox = outbox
        self.tokens = tokens
        self.clock = clock
        self.bot_events = 0  # crawler events dropped since start-up
        self.on_queued: Callable[[str], None] = lambda space_id: None
        # (space id, outcome, reason, event id): see relay.metrics for the outcomes
        self.on_received: Callable[[str, str, str, str | None], None] = ignore_report

    def _refused_space(self, request: Request) -> tuple[str, str]:
        """The Space id and the reason of a refusal by `_space` (only called on one)."""
        space = self.sites.get(request.query_params.get("k", ""))
        if space is None:
            return "-", "auth"
        origin = request.headers.get("origin")
        if origin is None or origin.lower() not in space.allowed_origins:
            return space.id, "origin"
        return space.id, "auth"

    def _space(self, request: Request) -> tuple[Space, dict[str, str]]:
        """The Space of the site key and the CORS headers for the request's Origin; or 403."""
        space = self.sites.get(request.query_params.get("k", ""))
        if space is None:
            raise Forbidden("Unknown site key: put your Space's site_key in data-key.")
        origin = request.headers.get("origin")
        if origin is None or origin.lower() not in space.allowed_origins:
            raise Forbidden(
                f"The origin {origin or '(none)'} is not allowed for this site key: "
                "add it to allowed_origins of the Space.",
                headers={"Vary": "Origin"},
            )
        cors = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
        if not space.active:
            raise Forbidden(
                "This site's Space is inactive: its subscription has ended.", headers=cors
            )
        return space, cors

    async def preflight(self, request: Request) -> Response:
        _, cors = self._space(request)
        cors.update(
            {
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "content-type",
                "Access-Control-Max-Age": CORS_MAX_AGE,
            }
        )
        return Response(status_code=204, headers=cors)

    async def handle(self, request: Request) -> Response:
        try:
            space, headers = self._space(request)
        except RelayError as err:
            if request.headers.get("content-length") != "0":
                err.headers.update(CLOSE)  # the body is not read: see relay.api.CLOSE
            space_id, reason = self._refused_space(request)
            self.on_received(space_id, "rejected", reason, None)
            raise
        settings = self.settings
        visit = self.tokens.visit(request.cookies.get(settings.cookie_name))
        headers["Set-Cookie"] = cookie_header(
            settings.cookie_name,
            visit.cookie,
            secure=request.url.scheme == "https",
            domain=settings.cookie_domain,
            max_age=self.tokens.max_age_seconds,
        )
        ip = request.client.host if request.client else None
        read = False
        try:
            limit = settings.browser_rate_limit_per_minute
            decision = await self.limiter.take(enrich.rate_key(ip), limit)
            headers.update(decision.headers())
            if not decision.allowed:
                raise RateLimited(
                    f"Too many requests from this address: at most {limit} per minute; "
                    f"retry after {decision.retry_after} s."
                )
            raw = await read_body(
                request, settings.max_body_bytes, "send fewer events at once.",
                seconds=settings.body_timeout_seconds,
            )
            read = True
            events = enrich.parse_batch(raw, settings.max_batch_events)
            user_agent = request.headers.get("user-agent")
            if enrich.is_bot(user_agent):
                self.bot_events += len(events)
                for sent in events:
                    self.on_received(space.id, "bot", "", _event_id(sent))
                body = {"accepted": 0, "duplicates": 0, "refused": [], "bot": True}
                return JSONResponse(body, 202, headers)
            answer = await self._enqueue(
                space, events, enrich.Client(ip, user_agent, visit.visitor_id)
            )
        except RelayError as err:
            err.headers.update(headers)
            if not read and request.headers.get("content-length") != "0":
                err.headers.update(CLOSE)
            self.on_received(space.id, "rejected", refusal_reason(err), None)
            raise
        return JSONResponse(answer, 202, headers)

    async def _enqueue(
        self, space: Space, events: list[object], client: enrich.Client
    ) -> dict[str, object]:
        now = self.clock()
        entries = []
        refused: list[dict[str, object]] = []
        for index, sent in enumerate(events):
            event, errors = enrich.browser_event(sent, client, space.custom_events, now)
            if errors:
                shown = _event_id(sent)
                refused.append({"index": index, "event_id": shown, "errors": errors})
                self.on_received(space.id, "rejected", next(iter(errors), "body"), shown)
            else:
                entries.append(new_event(space, event, now))
        queued: list[bool] = []
        if entries:
            try:
                queued = await self.outbox.enqueue(entries, now)
            except Exception as exc:  # the store failed: nothing was acknowledged
                raise Unavailable("The events could not be stored; retry the request.") from exc
        accepted = sum(queued)
        if accepted:
            self.on_queued(space.id)
        for entry, fresh in zip(entries, queued):
            self.on_received(space.id, "accepted" if fresh else "duplicate", "", entry.idempotency_key)
        return {"accepted": accepted, "duplicates": len(queued) - accepted, "refused": refused}


def _event_id(sent: object) -> str | None:
    """The event id the snippet gave an event, if it is a string."""
    event_id = sent.get("event_id") if isinstance(sent, dict) else None
    return event_id if isinstance(event_id, str) else None


class Demo:
    """GET /demo (embedded default only): a page with the snippet tag and buttons that use it."""

    def __init__(self, settings: Settings, page: bytes | None) -> None:
        self.page = page.decode("utf-8") if page is not None else None
        demo = settings.spaces.get("demo")
        spaces = [demo] if demo is not None else list(settings.spaces.values())
        self.site_key = next((s.site_key for s in spaces if s and s.site_key), None)
        self.snippet_path = settings.snippet_path
        self.collect_path = settings.collect_path

    async def handle(self, request: Request) -> Response:
        if self.page is None or self.site_key is None:
            return JSONResponse({"message": "No demo here: it needs a Space with a site_key."}, 404)
        # root_path is where the relay is mounted ("" at the root); base_url would leave it out.
        url, root = request.url, request.scope.get("root_path", "")
        base = f"{url.scheme}://{url.netloc}{root}" if _HOST.fullmatch(url.netloc) else root
        values = {
            "{{site_key}}": self.site_key,
            "{{snippet_src}}": base + self.snippet_path,
            "{{endpoint}}": base + self.collect_path,
        }
        page = self.page
        for placeholder, value in values.items():
            page = page.replace(placeholder, html.escape(value, quote=True))
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
