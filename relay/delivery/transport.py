"""The forwarder's HTTP transport: httpx's interface over aiohttp's connection pool.

httpx is the forwarder's client (its tests and `Upstream` speak httpx), but httpx's own async
pool (httpcore over anyio) costs milliseconds of CPU per request. `AiohttpTransport` keeps the
httpx interface and sends with an `aiohttp.ClientSession`, which costs a fraction of that
(bench/README.md, "What each client cost"). The whole answer is read before it is returned:
the upstream's answers are a few hundred bytes, and the forwarder reads them whole anyway.

aiohttp's failures become httpx's, so `Upstream.send` classifies them as it always has:

    aiohttp.ConnectionTimeoutError       -> httpx.ConnectTimeout
    aiohttp.ServerTimeoutError, TimeoutError (no answer in time) -> httpx.ReadTimeout
    aiohttp.ClientConnectorError         -> httpx.ConnectError   (refused, unreachable)
    aiohttp.ClientPayloadError, ServerDisconnectedError -> httpx.RemoteProtocolError
    other aiohttp.ClientError, OSError   -> httpx.ReadError      (a reset, a broken pipe)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import NamedTuple

import aiohttp
import httpx

from relay import __version__

USER_AGENT = f"comet-relay/{__version__}"
RawHeaders = tuple[tuple[bytes, bytes], ...]
MAX_CONNECTIONS = 200  # room for every Space's requests in flight
KEEPALIVE_SECONDS = 30.0


class Answer(NamedTuple):
    """An upstream's whole answer to `AiohttpTransport.post`."""

    status: int
    headers: Mapping[str, str]  # looked up without regard to case
    content: bytes


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request with one shared `aiohttp.ClientSession`.

    The session (and its pool of at most `max_connections` connections, kept alive for
    `keepalive` seconds) is made on the first request, on the running event loop, and closed
    by `aclose` (or leaving `async with`). Timeouts come from httpx's per-request `timeout`.
    """

    def __init__(
        self, *, max_connections: int = MAX_CONNECTIONS, keepalive: float = KEEPALIVE_SECONDS
    ) -> None:
        self.max_connections = max_connections
        self.keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=self.keepalive
        )
        # httpx decodes the body by its Content-Encoding; aiohttp must hand it over as sent.
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    def client_timeout(self, timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        """aiohttp's form of an httpx `timeout` extension (connect, read, write, pool)."""
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("write"), timeout.get("pool"))
        made = self._timeouts.get(key)
        if made is None:
            # As httpx: no bound on the whole request, one per phase. aiohttp has no write
            # timeout; its `connect` covers the wait for a pooled connection.
            connect, read, _, pool = key
            made = aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)
            self._timeouts[key] = made
        return made

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read the whole answer; aiohttp's failures raised as httpx's."""
        body = await request.aread()
        status, _, raw_headers, content = await self._exchange(
            request.method, str(request.url), request.headers.multi_items(), body or None,
            self.client_timeout(request.extensions.get("timeout", {})), request,
        )
        # `stream=`: the answer's own headers as sent, no Content-Length added
        return httpx.Response(
            status, headers=raw_headers, stream=httpx.ByteStream(content), request=request
        )

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: aiohttp.ClientTimeout
    ) -> Answer:
        """POST `body` with `headers` (aiohttp adds Host and Content-Length) and read the whole
        answer, without httpx's request and response objects: `Upstream.send`'s path, which
        costs about half of `handle_async_request`'s (bench/README.md, issue 16). Failures
        are raised as httpx's, as there. An answer with a Content-Encoding is decoded by
        httpx, as `handle_async_request`'s caller would have it."""
        status, answer_headers, raw_headers, content = await self._exchange(
            "POST", url, headers, body, timeout, None
        )
        if "Content-Encoding" in answer_headers:
            decoded = httpx.Response(status, headers=raw_headers, stream=httpx.ByteStream(content))
            content = await decoded.aread()
        return Answer(status, answer_headers, content)

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        request: httpx.Request | None,
    ) -> tuple[int, Mapping[str, str], RawHeaders, bytes]:
        session = self._session
        if session is None:
            session = self._session = self._open()
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as answer:
                return answer.status, answer.headers, answer.raw_headers, await answer.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        """Close the session and its connections; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


def forwarding_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The HTTP client the forwarder sends with: httpx over `AiohttpTransport` (unless a
    `transport` is given), with the relay's User-Agent."""
    return httpx.AsyncClient(
        transport=transport if transport is not None else AiohttpTransport(),
        headers={"User-Agent": USER_AGENT},
    )
