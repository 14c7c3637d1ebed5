"""Slow and endless bodies on the Create Event API, over raw sockets to `comet-relay serve`."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RelayProcess, write_config

PATH = "/public-api/v1/events/track"
EVENT = b'{"event_name":"contact","email":"s@lo.w"}'


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("slow")
    config = write_config(directory, relay_extra="body_timeout_seconds = 1\nmax_body_bytes = 4096")
    with RelayProcess(config) as proc:
        yield proc


def head(relay: RelayProcess, length: str, key: str = "key-acme-write") -> bytes:
    framing = f"Content-Length: {length}" if length else "Transfer-Encoding: chunked"
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the relay sends until it closes the connection; fails after `seconds`."""
    sock.settimeout(seconds)
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the connection was still open after {seconds} s: {data[:200]!r}")


def test_a_body_that_trickles_in_gets_408_and_the_connection_closes(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(head(relay, str(len(EVENT))) + EVENT[:5])  # and then nothing more
        answer = read_until_closed(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in answer.lower()
    assert b"did not arrive within 1 s" in answer
    ok = httpx.post(relay.url + PATH, content=EVENT, headers={"Authorization": "Bearer key-acme-write"})
    assert ok.status_code == 202  # everyone else is served


def test_an_endless_chunked_body_is_cut_off_at_the_limit(relay: RelayProcess) -> None:
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(head(relay, ""))
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # far past the 4 KiB limit: the relay must hang up
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset or broken pipe: the relay closed the connection
            pass
        answer = read_until_closed(sock, 15) if sent < 64 * 1024 * 1024 else b""
    assert sent < 64 * 1024 * 1024, "the relay went on reading an endless body"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 413")


def test_a_refusal_before_the_body_closes_the_connection(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(head(relay, "100000000", key="wrong") + b"x" * 1000)
        answer = read_until_closed(sock, 15)
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower()


def test_serve_refuses_an_endless_request_head(relay: RelayProcess) -> None:
    line = b"X-Padding: " + b"p" * 1000 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: relay\r\n".encode())
        try:
            while sent < 64 * 1024 * 1024:  # uvicorn's httptools protocol alone buffers it all
                sock.sendall(line)
                sent += len(line)
        except OSError:
            pass
        answer = read_until_closed(sock, 15) if sent < 64 * 1024 * 1024 else b""
    assert sent < 64 * 1024 * 1024, "the relay went on buffering an endless head"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")


def browser_head(length: int, origin: str = "https://acme.example") -> bytes:
    return (
        f"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nOrigin: {origin}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_the_browser_endpoint_has_the_same_body_deadline(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(browser_head(100) + b'{"e": [')
        answer = read_until_closed(sock, 15)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower()


def test_a_browser_refusal_before_the_body_closes_the_connection(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(browser_head(100_000_000, origin="https://evil.example") + b"x" * 1000)
        answer = read_until_closed(sock, 15)
    assert answer.startswith(b"HTTP/1.1 403") and b"connection: close" in answer.lower()
