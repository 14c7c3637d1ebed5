"""relay.limits: a body must arrive within a deadline, and a late one closes its connection.

The unit tests drive `bounded_receive` with fake `receive` callables and a fake clock. The
last test serves a tiny ASGI app that reads its body through `bounded_receive`, with uvicorn
(the same server and HTTP parser as `comet-relay serve`) on a real socket, and plays a slow
loris against it: the trickle is cut off with a 408 and a closed connection, and a normal
client is served meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from relay.errors import RelayError
from relay.limits import BodyTimeout, Message, bounded_receive
from tests.support import free_port, wait_for


def messages(*items: Message) -> Any:
    queue = list(items)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def test_messages_that_come_in_time_pass_unchanged() -> None:
    sent: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def run() -> list[Message]:
        bounded = bounded_receive(messages(*sent), 5.0)
        return [await bounded() for _ in sent]

    assert asyncio.run(run()) == sent


def test_the_deadline_covers_the_whole_body_not_each_chunk() -> None:
    now = [100.0]
    chunk = {"type": "http.request", "body": b"x", "more_body": True}

    async def run() -> int:
        bounded = bounded_receive(messages(*[chunk] * 10), 2.0, clock=lambda: now[0])
        got = 0
        for _ in range(10):
            await bounded()  # each chunk comes at once, but 0.75 s of the clock after the last
            got += 1
            now[0] += 0.75
        return got

    with pytest.raises(BodyTimeout) as caught:
        asyncio.run(run())
    assert caught.value.status == 408
    assert caught.value.headers == {"Connection": "close"}
    assert "2 s" in caught.value.message


def test_a_receive_that_never_returns_is_given_up() -> None:
    async def run() -> None:
        stalled = asyncio.Event()

        async def receive() -> Message:
            await stalled.wait()  # a client that sent its headers and then nothing
            return {}

        await bounded_receive(receive, 0.05)()

    with pytest.raises(BodyTimeout):
        asyncio.run(run())


def test_a_timeout_is_a_relay_error_and_a_deadline_must_be_positive() -> None:
    assert issubclass(BodyTimeout, RelayError)
    for seconds in (0, -1):
        with pytest.raises(ValueError):
            bounded_receive(messages(), seconds)


# --- against uvicorn on a real socket ------------------------------------------------------


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stand-in for the relay's body reading: read it all through bounded_receive."""
    if scope["type"] != "http":
        return
    bounded = bounded_receive(receive, 1.0)
    size, status, headers = 0, 200, []
    try:
        while True:
            message = await bounded()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
    except RelayError as err:
        status = err.status
        headers = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        echo_length, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_for(lambda: served.started, 20, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    thread.join(20)


def test_a_slow_loris_is_cut_off_while_others_are_served(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
    slow.settimeout(0.2)  # the pace of the trickle: a byte each time nothing came back
    answer, closed = b"", False
    deadline = time.monotonic() + 30
    others = 0
    while not closed and time.monotonic() < deadline:
        try:
            slow.sendall(b"x")
        except OSError:  # the relay closed its end
            closed = True
            break
        try:
            chunk = slow.recv(65536)
        except TimeoutError:
            chunk = None
        if chunk == b"":
            closed = True
        elif chunk:
            answer += chunk
        if others < 3:  # a normal client, while the trickle goes on
            r = httpx.post(server, content=b"hello", timeout=10)
            assert (r.status_code, r.text) == (200, "5")
            others += 1
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert closed, "the connection was left open after the 408"
    assert others == 3
