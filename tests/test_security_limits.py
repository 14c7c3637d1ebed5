"""relay.server: a request's head and body must arrive in time, and a head may not be huge.

The unit tests drive `bounded_receive` with fake `receive` callables and a fake clock. The
others serve a tiny ASGI app with uvicorn (the same server and httptools parser as
`comet-relay serve`) on a real socket, in a thread, and play slow and oversized clients
against it: each is cut off (408 or 400, and a closed connection) while a normal client is
served meanwhile.
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
from starlette.types import Message

from relay.errors import BodyTimeout, RelayError
from relay.server.body import bounded_receive
from relay.server.head import bounded_http_protocol
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
    if scope["path"] == "/slow":
        await asyncio.sleep(HEAD_SECONDS * 1.5)  # an app slower than the head deadline
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": str(size).encode()})


HEAD_SECONDS = 1.0
HEAD_BYTES = 8192


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app on uvicorn, with the head bounds `comet-relay serve` should use (tighter)."""
    port = free_port()
    config = uvicorn.Config(
        echo_length,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="error",
        http=bounded_http_protocol(HEAD_BYTES, HEAD_SECONDS),
    )
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    wait_for(lambda: served.started, 20, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    thread.join(20)


def connect(server: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10)


def served_normally(server: str) -> None:
    r = httpx.post(server, content=b"hello", timeout=10)
    assert (r.status_code, r.text) == (200, "5")


def trickle(sock: socket.socket, seconds: float, others: str | None = None) -> tuple[bytes, bool]:
    """Send a byte at a time until the server answers and closes, or `seconds` pass; a
    normal client is served meanwhile (three times) if `others` names the server.
    (The answer so far, whether the server closed the connection.)"""
    sock.settimeout(0.2)  # the pace of the trickle: a byte each time nothing came back
    answer, served = b"", 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"x")
        except OSError:  # the server closed its end
            return answer, True
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None
        except ConnectionResetError:  # our byte met the closed connection
            return answer, True
        if chunk == b"":
            return answer, True
        answer += chunk or b""
        if others is not None and served < 3:
            served_normally(others)
            served += 1
    return answer, False


def wait_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Read until the server closes the connection or `seconds` pass, sending nothing."""
    sock.settimeout(seconds)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except TimeoutError:
        return answer, False
    except ConnectionResetError:
        pass
    return answer, True


@pytest.mark.parametrize(
    "start",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab",  # a slow body
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # a slow head
    ],
    ids=["body", "head"],
)
def test_a_trickle_is_cut_off_while_others_are_served(server: str, start: bytes) -> None:
    slow = connect(server)
    slow.sendall(start)
    answer, closed = trickle(slow, 30, others=server)
    slow.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert closed, "the connection was left open after the 408"


def test_a_connection_that_sends_nothing_is_closed(server: str) -> None:
    idle = connect(server)
    served_normally(server)
    answer, closed = wait_closed(idle, 30)
    idle.close()
    assert closed and answer == b""


def test_an_endless_head_is_refused_before_it_is_buffered(server: str) -> None:
    big = connect(server)
    big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    sent = 0
    try:
        while sent < 50_000_000:
            big.sendall(line)
            sent += len(line)
    except OSError:
        pass
    answer, closed = wait_closed(big, 30)
    big.close()
    assert closed and sent < 50_000_000
    assert answer.startswith(b"HTTP/1.1 400 ") or answer == b"", answer  # a reset may lose it
    served_normally(server)


def test_one_endless_header_line_is_refused_too(server: str) -> None:
    big = connect(server)
    big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    sent = 0
    try:
        while sent < 50_000_000:
            big.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    _, closed = wait_closed(big, 30)
    big.close()
    assert closed and sent < 50_000_000


@pytest.mark.parametrize("size", [HEAD_BYTES + 1000, 100_000])
def test_a_large_head_sent_in_one_piece_is_refused(server: str, size: int) -> None:
    """The head arrives whole in one read: counted before it is parsed, not after."""
    sock = connect(server)
    pad = b"a" * (size - 100)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\nContent-Length: 2\r\n\r\nok")
    answer, closed = wait_closed(sock, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert closed
    served_normally(server)


def test_heads_and_bodies_in_bounds_are_served(server: str) -> None:
    # A head just under the limit, sent in one piece with a large body; then a keep-alive
    # connection that waits longer than the head deadline between two requests.
    headers = {"X-Pad": "a" * (HEAD_BYTES - 200)}
    with httpx.Client(timeout=10) as client:
        r = client.post(server, content=b"b" * 200_000, headers=headers)
        assert (r.status_code, r.text) == (200, "200000")
        r = client.post(f"{server}/slow", content=b"abc")  # answers after 1.5 head deadlines
        assert (r.status_code, r.text) == (200, "3")
        r = client.post(server, content=b"again")
        assert (r.status_code, r.text) == (200, "5")


def test_the_protocol_needs_positive_bounds() -> None:
    for bad in ((0, 1.0), (1, 0.0)):
        with pytest.raises(ValueError):
            bounded_http_protocol(*bad)
