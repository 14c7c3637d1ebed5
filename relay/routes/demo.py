"""GET /demo (the embedded default only): a page with the snippet tag and buttons that use it."""

from __future__ import annotations

import html
import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from relay.settings import Settings

_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


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
