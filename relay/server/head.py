"""Bounds on a request's head, which uvicorn does not set itself with httptools.

uvicorn bounds the idle time between two requests of a connection (timeout_keep_alive), and
with its h11 parser the size of a request's head (h11_max_incomplete_event_size). With
httptools, the parser `uvicorn[standard]` picks, a head may be any size (one connection can
make the process buffer hundreds of megabytes of header lines), and a client may take
forever: a connection that sends nothing, or a head sent a byte at a time, holds its
connection for as long as the client likes. `bounded_http_protocol()` is uvicorn's httptools
protocol with a limit on the size of a head and a deadline for it (from the connection's
start, or a later request's first byte), for `uvicorn.run(..., http=bounded_http_protocol())`.
The body's bounds are in `relay.server.body`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# What h11 allows by default; a browser's head with all its cookies is well under 8 KiB.
DEFAULT_HEAD_BYTES = 16384
DEFAULT_HEAD_SECONDS = 10.0
_HEAD_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `max_head_bytes` and `head_seconds` for each head.

    The bytes of a head are counted as they arrive, before httptools has parsed a header
    whole, so one endless header line is stopped as surely as many lines. The deadline runs
    from the connection's start (a client that sends nothing) or from a later request's first
    byte (after a response, uvicorn's keep-alive timeout covers the idle time), to the end of
    the head; it never runs while the app answers.
    """

    max_head_bytes = DEFAULT_HEAD_BYTES
    head_seconds = DEFAULT_HEAD_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Counted before httptools parses: a head that arrives whole in one read would be
            # complete (and the count reset) by the time a check after parsing runs.
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self.max_head_bytes:
                self._too_large()
                return
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._too_large()

    def _too_large(self) -> None:
        if not self.transport.is_closing():
            self.send_400_response(f"The request head is larger than {self.max_head_bytes} bytes.")
        self._stop_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head is late while the app still answers the request before it:
            # let that answer go out, then close.
            self.cycle.keep_alive = False
            return
        if self._head_bytes:  # a head was begun: say why it is refused
            self.transport.write(_HEAD_TIMEOUT)
        self.transport.close()


def bounded_http_protocol(
    max_head_bytes: int = DEFAULT_HEAD_BYTES, head_seconds: float = DEFAULT_HEAD_SECONDS
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, refusing a request head over `max_head_bytes` (400, then
    the connection is closed) and one not complete within `head_seconds` (408, closed; a
    connection that sent nothing is closed without an answer). For `uvicorn.run(http=...)`.
    """
    if max_head_bytes <= 0 or head_seconds <= 0:
        raise ValueError("the head's size and deadline must be positive")
    attributes = {"max_head_bytes": max_head_bytes, "head_seconds": head_seconds}
    return type("BoundedHeadProtocol", (_BoundedHead,), attributes)


# The protocol `comet-relay serve` runs, by name: uvicorn takes "relay.server.head:BoundedHeadProtocol"
# as its `http` option, also in worker processes.
BoundedHeadProtocol = bounded_http_protocol()
