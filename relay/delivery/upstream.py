"""The upstream Create Event API: send one event, classify the answer.

`classify` is pure so every status can be tested without a network; `Upstream.send` adds the
transport (httpx) and turns timeouts and resets into retries.
"""

from __future__ import annotations

import email.utils
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum

import aiohttp
import httpx

from relay.delivery.transport import AiohttpTransport

MAX_MESSAGE = 500
SHORT_ANSWER = 512  # bytes: an answer this short is read once, then remembered
REDACTED = "[the upstream token]"


class Verdict(Enum):
    """What an upstream answer means for the event and its Space."""

    DELIVERED = "delivered"
    SLOW_DOWN = "slow_down"  # 429: wait `delay` seconds before the Space's next request
    RETRY = "retry"  # 5xx, timeouts, resets: back off with jitter
    PAUSE = "pause"  # 401/403: the token or the Space is wrong; keep events, pause the Space
    FATAL = "fatal"  # 422 and other 4xx: the event itself is refused; dead letters


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None
    message: str = ""
    delay: float | None = None  # for SLOW_DOWN: seconds the upstream asked us to wait


RETRYABLE_4XX = frozenset({408, 425})


def classify(status: int, headers: Mapping[str, str], body: bytes, now: float) -> Outcome:
    """What one upstream answer means for the event and its Space."""
    message = _message(body)
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, status, message)
    if status == 429:
        return Outcome(Verdict.SLOW_DOWN, status, message, retry_after(headers.get("retry-after"), now))
    if status in (401, 403):
        return Outcome(Verdict.PAUSE, status, message)
    if status >= 500 or status in RETRYABLE_4XX:
        return Outcome(Verdict.RETRY, status, message)
    return Outcome(Verdict.FATAL, status, message)


def retry_after(value: str | None, now: float, default: float = 60.0) -> float:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return default
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:
            return default
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return default
    return min(max(seconds, 0.0), 3600.0)


def _message(body: bytes) -> str:
    """The upstream's own words: its JSON `message` (and errors) if any, else the raw text.

    A short answer is read once: an upstream answers most events with the same bytes."""
    return _short_message(body) if len(body) <= SHORT_ANSWER else _read_message(body)


@functools.lru_cache(maxsize=64)
def _short_message(body: bytes) -> str:
    return _read_message(body)


def _read_message(body: bytes) -> str:
    text = body[: 4 * MAX_MESSAGE].decode("utf-8", "replace").strip()
    try:
        data = json.loads(body)
    except ValueError:
        return text[:MAX_MESSAGE]
    if isinstance(data, dict) and "message" in data:
        out = str(data["message"])
        if data.get("errors"):
            out += " " + json.dumps(data["errors"], separators=(",", ":"))
        return out[:MAX_MESSAGE]
    return text[:MAX_MESSAGE]


class Upstream:
    """Sends events to a Space's upstream with its bearer token.

    With the forwarder's own transport (`AiohttpTransport`) each event is one
    `AiohttpTransport.post`: no httpx request or response objects, which cost about as much
    CPU as the HTTP itself (bench/README.md, issue 16). With any other transport (a test's
    `httpx.MockTransport`, httpx's own pool) it is one `httpx.Request` handed straight to the
    client's transport, skipping the client's layers (auth, redirects, cookies, event hooks),
    which do nothing for these POSTs. Either way the client's default headers (its
    User-Agent) are sent, and a URL's parsed form and each token's headers are made once.
    """

    def __init__(self, client: httpx.AsyncClient, timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = timeout
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        self._targets: dict[tuple[str, str | None], tuple[httpx.URL, httpx.Headers]] = {}
        self._direct: dict[tuple[str, str | None], _Direct | None] = {}

    def request(self, url: str, token: str | None, payload: bytes) -> httpx.Request:
        """The POST of `payload` to `url`, with the client's headers and the bearer `token`.

        Made with `stream=`, so httpx adds no headers of its own: Host and Content-Length are
        set here, as httpx would set them, from headers merged once per URL and token.
        """
        target = self._targets.get((url, token))
        if target is None:
            parsed = httpx.URL(url)
            headers = httpx.Headers({"Host": parsed.netloc.decode("ascii")})
            headers.update(self._headers(token))
            target = self._targets[(url, token)] = (parsed, headers)
        parsed, template = target
        headers = httpx.Headers(template)
        headers["Content-Length"] = str(len(payload))
        return httpx.Request(
            "POST", parsed, headers=headers, stream=httpx.ByteStream(payload),
            extensions=self._extensions,
        )

    async def send(self, url: str, token: str | None, payload: bytes, now: float) -> Outcome:
        """POST `payload` to `url` and classify the answer; a timeout or a failed connection
        is a retry, and the token never appears in the outcome's message."""
        try:
            direct = self._direct[(url, token)]
        except KeyError:
            direct = self._direct[(url, token)] = self._direct_path(url, token)
        try:
            if direct is not None:
                status, headers, content = await direct.transport.post(
                    direct.url, direct.headers, payload, direct.timeout
                )
            else:
                status, headers, content = await self._send_request(url, token, payload)
        except httpx.TimeoutException:
            return Outcome(Verdict.RETRY, None, f"no answer within {self.timeout:g} s")
        except httpx.TransportError as exc:
            return Outcome(Verdict.RETRY, None, f"connection failed: {type(exc).__name__}: {exc}"[:MAX_MESSAGE])
        outcome = classify(status, headers, content, now)
        if token and token in outcome.message:  # it is logged and stored: never the token
            outcome = replace(outcome, message=outcome.message.replace(token, REDACTED))
        return outcome

    async def _send_request(
        self, url: str, token: str | None, payload: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        request = self.request(url, token, payload)
        r = await self.client._transport_for_url(request.url).handle_async_request(request)
        try:
            content = await r.aread()
        finally:
            await r.aclose()
        return r.status_code, r.headers, content

    def _direct_path(self, url: str, token: str | None) -> _Direct | None:
        """How `send` posts to `url` without httpx's objects, if the client's transport for
        it is an `AiohttpTransport`."""
        transport = self.client._transport_for_url(httpx.URL(url))
        if not isinstance(transport, AiohttpTransport):
            return None
        headers = dict(self._headers(token).items())  # Host and Content-Length: aiohttp's
        return _Direct(transport, url, headers, transport.client_timeout(self._extensions["timeout"]))

    def _headers(self, token: str | None) -> httpx.Headers:
        """The client's headers, the JSON content type and the bearer `token`."""
        headers = httpx.Headers(self.client.headers)
        headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


@dataclass(frozen=True)
class _Direct:
    """What `Upstream.send` needs to post to one URL with one token through `transport`."""

    transport: AiohttpTransport
    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout
