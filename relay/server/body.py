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
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

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
    # On the hot path the body is one message that has already arrived, and `receive` returns
    # it without ever suspending. So its coroutine is first run by hand: if it returns at
    # once, the body is there and no deadline is needed. Only a `receive` that has to wait
    # arms the one timer that bounds the whole body (armed before the wait begins). This
    # replaced an `asyncio.timeout` per `receive`, about 5 % of a Create Event request, and
    # then the timer and the `current_task` lookup (each a getpid system call in
    # `get_running_loop`) for every request; see bench/README.md.
    reading = receive().__await__()
    try:
        waiting = reading.send(None)
    except StopIteration as done:
        message: Message = done.value
        body = message.get("body", b"")
        if not message.get("more_body", False) and message["type"] == "http.request":
            if len(body) > limit:
                raise PayloadTooLarge(_too_large(limit, advice), headers=CLOSE) from None
            return body  # the usual case: the whole body in one message, already there
        return await _within(_read(_ready(message), receive, limit, advice), seconds)
    return await _within(_read(_resume(reading, waiting), receive, limit, advice), seconds)


async def _within(reading: Awaitable[bytes], seconds: float) -> bytes:
    """`await reading`, or `BodyTimeout` once `seconds` have passed. One timer cancels this
    task; that cancellation (and only that one) becomes `BodyTimeout`."""
    task = asyncio.current_task()
    if task is None:  # not in a task (no server runs it so): no timer to cancel it with
        return await reading
    expired = _Expiry(task)
    timer = task.get_loop().call_later(seconds, expired.fire)
    try:
        return await reading
    except asyncio.CancelledError:
        if expired.fired and task.uncancel() == 0:
            raise BodyTimeout(seconds) from None
        raise
    finally:
        timer.cancel()


@types.coroutine
def _resume(reading: Generator[Any, Any, Message], waiting: Any) -> Generator[Any, Any, Message]:
    """Go on running `reading`, an awaitable's iterator started by hand that now waits on
    `waiting`, exactly as `await` would have (what is sent or thrown in is passed on)."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # noqa: BLE001 - passed on, as `await` would
            try:
                waiting = reading.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waiting = reading.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _Expiry:
    """The body timer's action: cancel the reading task, and remember having done so."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _ready(message: Message) -> Message:
    return message


async def _read(first: Awaitable[Message], receive: Receive, limit: int, advice: str) -> bytes:
    """The body from its first message (once `first` gives it) and the rest of `receive`."""
    message = await first
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
