"""POST <collect_path>?k=<site key>: the browser's events, from the snippet.

It takes a batch `{"e": [event, ...]}`. Checks, in order: the Origin is an allowed origin of
the Space named by the site key (else 403, before anything else is read), the per-client-IP
rate limit (429), the body size and the batch size (413), then each event on its own. Every
answer to an allowed origin carries CORS headers with credentials and a refreshed visitor
cookie. A well-formed batch is answered 202

    {"accepted": N, "merged": M, "duplicates": D,
     "refused": [{"index": i, "event_id": ..., "errors": {...}}],
     "dropped": [{"index": i, "event_id": ..., "errors": {...}}]}

even when no event was accepted ("merged": events that met their API twin, which now carries
their visit; "dropped": events kept without an optional user field whose value was wrong,
see `relay.enrich.browser_event.drop_bad_user_fields`); a crawler's batch is counted, dropped
and answered 202 with `"bot": true`. The Content-Type is not checked: the snippet sends
text/plain (no preflight), other senders may send application/json.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.auth.visitor import VisitorTokens, cookie_header
from relay.enrich import bots
from relay.enrich.browser_event import browser_event, drop_bad_user_fields
from relay.enrich.client import Client, client_address
from relay.errors import Forbidden, Refused
from relay.intake import UNKNOWN_SPACE, Intake, Source, event_id
from relay.limits.base import address_bucket
from relay.observe.observer import Received
from relay.rules.batch import parse_batch
from relay.server.body import CLOSE, read_body
from relay.settings import Settings, Space
from relay.store.base import Outcome

CORS_MAX_AGE = "7200"  # Chromium's ceiling for caching a preflight


class Collect:
    """The collect endpoint and its CORS preflight (see the module docstring)."""

    def __init__(self, settings: Settings, intake: Intake, tokens: VisitorTokens) -> None:
        self.settings = settings
        self.sites: Mapping[str, Space] = {
            space.site_key: space for space in settings.spaces.values() if space.site_key
        }
        self.intake = intake
        self.tokens = tokens
        self.bot_events = 0  # crawler events dropped since start-up

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

    def _refused_space(self, request: Request) -> tuple[str, str]:
        """The Space id and the reason of a refusal by `_space` (only called on one)."""
        space = self.sites.get(request.query_params.get("k", ""))
        if space is None:
            return UNKNOWN_SPACE, "auth"
        origin = request.headers.get("origin")
        if origin is None or origin.lower() not in space.allowed_origins:
            return space.id, "origin"
        return space.id, "auth"

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
        except Refused as err:
            if request.headers.get("content-length") != "0":
                err.headers.update(CLOSE)  # the body is not read: see relay.server.body.CLOSE
            space_id, reason = self._refused_space(request)
            self.intake.report(Received(Source.BROWSER, space_id, "rejected", reason))
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
            # The allowance counts events: one now (nothing is read for an address that has
            # none left), the rest of the batch once it is parsed.
            bucket = address_bucket(client_address(ip))
            over = f"Too many events from this address: at most {limit} per minute"
            decision = await self.intake.take(bucket, limit, over)
            headers.update(decision.headers())
            raw = await read_body(
                request, settings.max_body_bytes, "send fewer events at once.",
                seconds=settings.body_timeout_seconds,
            )
            read = True
            events = parse_batch(raw, settings.max_batch_events)
            if len(events) > 1:
                decision = await self.intake.take(bucket, limit, over, cost=len(events) - 1)
                headers.update(decision.headers())
            user_agent = request.headers.get("user-agent")
            if bots.is_bot(user_agent):
                self.bot_events += len(events)
                self.intake.bots(Source.BROWSER, space.id, events)
                body = {
                    "accepted": 0, "merged": 0, "duplicates": 0, "refused": [], "dropped": [],
                    "bot": True,
                }
                return JSONResponse(body, 202, headers)
            client = Client(ip, user_agent, visit.visitor_id)
            enrich = functools.partial(
                browser_event, client=client, custom_events=space.custom_events,
                now=self.intake.clock(),
            )
            dropped: list[dict[str, object]] = []
            indexes = itertools.count()  # the intake checks the events in order, each once

            def check(sent: object) -> tuple[dict[str, object], dict[str, list[str]]]:
                index = next(indexes)
                event, errors, lost = drop_bad_user_fields(*enrich(sent), space.custom_events)
                if lost:
                    dropped.append({"index": index, "event_id": event_id(sent), "errors": lost})
                return event, errors

            accepted = await self.intake.accept(space, Source.BROWSER, events, check)
        except Refused as err:
            err.headers.update(headers)
            if not read and request.headers.get("content-length") != "0":
                err.headers.update(CLOSE)
            self.intake.refused(Source.BROWSER, space.id, err)
            raise
        answer = {
            "accepted": accepted.count(Outcome.QUEUED),
            "merged": accepted.count(Outcome.MERGED),
            "duplicates": accepted.count(Outcome.DUPLICATE),
            "refused": [
                {"index": r.index, "event_id": r.event_id, "errors": r.errors}
                for r in accepted.refused
            ],
            "dropped": dropped,
        }
        return JSONResponse(answer, 202, headers)
