"""GET <snippet_path> and its aliases: the browser snippet, compressed once, cacheable; and
GET <stub path> (`Settings.stub_path`: /comet.js -> /comet-stub.js): the tag's first line as a file,
for a page whose Content-Security-Policy allows no inline script (docs/snippet.md).

Each script is read from the package once (static/comet.min.js, static/comet-stub.js),
gzipped once, and served with a strong ETag per representation, `Cache-Control` of an hour
and `Vary: Accept-Encoding`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
from importlib.resources.abc import Traversable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger("relay.browser")

SNIPPET_FILE = "comet.min.js"  # built from static/src/ by scripts/build-snippet
STUB_FILE = "comet-stub.js"  # the tag's first line, written by hand


def static_file(name: str) -> bytes | None:
    """The bytes of `name` in the package's static files, or None if it is not there."""
    root: Traversable
    try:
        root = importlib.resources.files("relay.static")
    except ModuleNotFoundError:  # a source checkout, not installed: static/ is beside relay/
        root = Path(__file__).resolve().parents[2] / "static"
    item = root / name
    return item.read_bytes() if item.is_file() else None


class Snippet:
    """GET <snippet_path> and its aliases: the script, read once, gzipped once, with an ETag."""

    def __init__(self, body: bytes | None, name: str = SNIPPET_FILE) -> None:
        self.body = body
        if body is None:
            log.warning("static/%s is missing from this installation: it is 404", name)
            return
        digest = hashlib.sha256(body).hexdigest()[:32]
        self.etag = f'"{digest}"'
        self.gzip_etag = f'"{digest}-gz"'  # another representation, so another strong ETag
        compressed = gzip.compress(body, compresslevel=9, mtime=0)
        self.gzipped = compressed if len(compressed) < len(body) else None

    @classmethod
    def from_package(cls, name: str = SNIPPET_FILE) -> Snippet:
        """A script as shipped: static/comet.min.js, or static/comet-stub.js."""
        return cls(static_file(name), name)

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
