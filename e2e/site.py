"""The test site: e2e/pages served from its own port, in a thread of the test process.

A page names the relay as `{{RELAY}}`; the site puts in the origin of the relay that the
current test started, so the same pages work with a new relay process for each test. A test
may also rewrite its pages (`rewrites`), e.g. to give the snippet's tag another attribute.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support import free_port, wait_for

PAGES = Path(__file__).resolve().parent / "pages"
TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript; charset=utf-8"}


class Site:
    """A static file server for e2e/pages on a free loopback port (start() / stop())."""

    def __init__(self) -> None:
        self.port = free_port()
        self.relay = ""  # the relay's origin, set by each test's fixture
        self.rewrites: dict[str, str] = {}  # old -> new text in every page, reset for each test
        app = Starlette(routes=[Route("/{name:path}", self._file)])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="e2e-site", daemon=True)

    def origin(self, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}"

    def start(self) -> Site:
        self._thread.start()
        wait_for(lambda: self._server.started, 10, "the test site")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    async def _file(self, request: Request) -> Response:
        path = (PAGES / request.path_params["name"]).resolve()
        if path.parent != PAGES or not path.is_file() or path.suffix not in TYPES:
            return PlainTextResponse("not found", 404)
        body = path.read_text()
        for old, new in self.rewrites.items():
            body = body.replace(old, new)
        body = body.replace("{{RELAY}}", self.relay)
        return Response(body, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-store"})
