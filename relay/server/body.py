"""Reading a request's body within bounds of size and time.

A body that trickles in (slow loris) would hold its handler for as long as the client likes,
and a huge one would be buffered whole. `receive_body` refuses a body over the limit with 413
as soon as that is known, and `bounded_receive` gives the whole body a deadline: past it the
read fails with `BodyTimeout` (408). Both answers close the connection, so the rest of a
trickle, or of an oversized upload, is not read either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import Message, Receive

from relay.errors import BodyTimeout, Disconnected, PayloadTooLarge

# A browser's 64 KiB batch over a poor mobile link (2 KiB/s) takes about 30 s.
DEFAULT_BODY_SECONDS = 30.0
# A refusal sent before the body was read closes the connection: otherwise the server would
# go on reading (and dropping) whatever the sender still streams, endlessly if it is chunked.
CLOSE = {"Connection": "close"}


def bounded_receive(
    receive: Receive,
    seconds: float = DEFAULT_BODY_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Receive:
    """`receive`, but every call fails with `BodyTimeout` once `seconds` have passed since the
    first call: the deadline covers the whole body, not each chunk of it.

    Use it for the body only: `await receive_body(bounded_receive(receive), ...)`. A call that
    returns in time returns exactly what `receive` returned (a disconnect too).
    """
    if seconds <= 0:
        raise ValueError("the body deadline must be a positive number of seconds")
    deadline: float | None = None

    async def bounded() -> Message:
        nonlocal deadline
        now = clock()
        if deadline is None:
            deadline = now + seconds
        left = deadline - now
        if left <= 0:
            raise BodyTimeout(seconds)
        try:
            async with asyncio.timeout(left):
                return await receive()
        except TimeoutError:
            raise BodyTimeout(seconds) from None

    return bounded


async def read_body(
    request: Request,
    limit: int,
    advice: str = "send one event per request.",
    seconds: float = DEFAULT_BODY_SECONDS,
) -> bytes:
    """The body of a Starlette request; see `receive_body`."""
    declared = request.headers.get("content-length")
    return await receive_body(request.receive, declared, limit, advice, seconds)


async def receive_body(
    receive: Receive,
    declared: str | None,
    limit: int,
    advice: str = "send one event per request.",
    seconds: float = DEFAULT_BODY_SECONDS,
) -> bytes:
    """The request body from ASGI `receive`, refused with 413 as soon as it is known to exceed
    `limit` bytes (`declared` is the Content-Length header, if any), and with 408 when the
    whole of it has not arrived within `seconds` (a slow-loris upload). Both close the
    connection.

    The 413 message ends with `advice` on what to send instead.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
    if seconds <= 0:
        raise ValueError("the body deadline must be a positive number of seconds")
    # One timer for the whole body, not an `asyncio.timeout` per `receive`: on the hot path
    # the body is one message already there, and a timeout context per call cost about 5 %
    # of a Create Event request (bench/README.md). The timer cancels this task; the
    # cancellation is turned into `BodyTimeout` below, and only when the timer caused it.
    task = asyncio.current_task()
    if task is None:  # not in a task (no server runs it so): a deadline per call instead
        return await _read(bounded_receive(receive, seconds), limit, advice)
    expired = _Expiry(task)
    timer = asyncio.get_running_loop().call_later(seconds, expired.fire)
    try:
        return await _read(receive, limit, advice)
    except asyncio.CancelledError:
        if expired.fired and task.uncancel() == 0:
            raise BodyTimeout(seconds) from None
        raise
    finally:
        timer.cancel()


class _Expiry:
    """The body timer's action: cancel the reading task, and remember having done so."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _read(receive: Receive, limit: int, advice: str) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        if len(body) > limit:
            raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
        return body  # the usual case: the whole body in one message
    buffer = bytearray()
    while True:
        if message["type"] != "http.request":
            # The sender hung up mid-body: nothing was accepted and nobody reads the answer.
            raise Disconnected()
        buffer += message.get("body", b"")
        if len(buffer) > limit:
            raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE)
        if not message.get("more_body", False):
            return bytes(buffer)
        message = await receive()


def _too_large(limit: int, advice: str) -> str:
    return f"The body is larger than this relay's limit of {limit} bytes: {advice}"
