"""The test site: e2e/pages served from its own port, in a thread of the test process.

A page names the relay as `{{RELAY}}`; the site puts in the origin of the relay that the
current test started, so the same pages work with a new relay process for each test. The
tag's first line is `{{STUB}}`: the site puts in static/comet-stub.js, the stub line as the
docs give it. A test
may also rewrite its pages (`rewrites`), e.g. to give the snippet's tag another attribute,
or give them response headers (`headers`, e.g. a Content-Security-Policy).

Besides e2e/pages: `/npm/<package>/<file>` serves the real front-end packages that
e2e/frontend installs (Vue, vue-router, React, react-router), `/~partytown/` Partytown's lib
(where its snippet looks for it), and `/spa/<page>/<anything>` the page `<page>.html`, as a
single-page app's server does for the app's own paths.
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
STUB = Path(__file__).resolve().parent.parent / "static" / "comet-stub.js"
NODE_MODULES = Path(__file__).resolve().parent / "frontend" / "node_modules"
PARTYTOWN = NODE_MODULES / "@builder.io" / "partytown" / "lib"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
}


class Site:
    """A static file server for e2e/pages on a free loopback port (start() / stop())."""

    def __init__(self) -> None:
        self.port = free_port()
        self.relay = ""  # the relay's origin, set by each test's fixture
        self.rewrites: dict[str, str] = {}  # old -> new text in every page, reset for each test
        self.headers: dict[str, str] = {}  # extra response headers of every page, idem
        app = Starlette(routes=[Route("/{name:path}", self._file, methods=["GET", "POST"])])
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
        name = request.path_params["name"]
        top, _, rest = name.partition("/")
        if top == "npm":
            return _package_file(NODE_MODULES, rest)
        if top == "~partytown":
            return _package_file(PARTYTOWN, rest)
        if top == "spa":
            name = rest.partition("/")[0] + ".html"
        path = (PAGES / name).resolve()
        if path.parent != PAGES or not path.is_file() or path.suffix not in TYPES:
            return PlainTextResponse("not found", 404)
        body = path.read_text()
        for old, new in self.rewrites.items():
            body = body.replace(old, new)
        body = body.replace("{{RELAY}}", self.relay).replace("{{STUB}}", STUB.read_text().strip())
        headers = {"Cache-Control": "no-store", **self.headers}
        return Response(body, media_type=TYPES[path.suffix], headers=headers)


def _package_file(root: Path, name: str) -> Response:
    """A file of an installed package under `root`, as it is (JavaScript and HTML only)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.suffix not in TYPES:
        return PlainTextResponse("not found", 404)
    return Response(path.read_bytes(), media_type=TYPES[path.suffix])
