"""The time of each HTTP request, for `comet_request_duration_seconds`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from relay.observe.metrics import Metrics


class RequestTimer:
    """ASGI middleware: the time of each HTTP request, labelled with its route's template.

    `routes` maps each endpoint to its path template; requests that match none count as
    route "other" (so a scan of random paths cannot blow up the label set).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: Mapping[Callable[..., Any], str],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        try:
            await self.app(scope, receive, send)
        finally:
            route = self.routes.get(scope.get("endpoint"), "other")  # type: ignore[arg-type]
            self.metrics.request(route, scope["method"], self.clock() - start)
