"""Bounds on how long a request may take to arrive, for the request-reading code to call.

uvicorn bounds the size of a request's head (h11_max_incomplete_event_size) and the idle time
between requests (timeout_keep_alive), but not how long a body may take: a client that sends
its headers and then a byte now and then (slow loris) keeps its handler waiting, and its
connection open, for as long as it likes. `bounded_receive` wraps an ASGI `receive` so that the
whole body must arrive within a deadline; past it the read fails with `BodyTimeout` (408), whose
`Connection: close` header makes uvicorn close the connection after the answer, so the rest of
a trickle is not read either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from relay.errors import RelayError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

# A browser's 64 KiB batch over a poor mobile link (2 KiB/s) takes about 30 s.
DEFAULT_BODY_SECONDS = 30.0


class BodyTimeout(RelayError):
    """408: the body did not arrive in time. The answer closes the connection."""

    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request body did not arrive within {seconds:g} s: send it at once.",
            headers={"Connection": "close"},
        )


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
