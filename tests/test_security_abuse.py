"""Security: hostile requests are refused, and refusing them does not harm other clients.

Against one real `comet-relay serve` over real sockets. Loopback peers play different
clients: 127.0.0.1 is the trusted proxy (so X-Forwarded-For names any client address), other
127.x addresses are untrusted clients on the internet. After each hostile request a normal
one must still be served promptly. tests/test_api_http.py and tests/test_browser_http.py
already show the 413s by Content-Length and the 422 for a body that is no JSON.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
ORIGIN = "https://acme.example"
LIMIT = 10  # browser requests per minute per client address
PROMPT = 5.0  # seconds: generous for a loaded 2-CPU machine; a blocked relay takes forever


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("security-abuse")
    extra = f"browser_rate_limit_per_minute = {LIMIT}\nmax_body_bytes = 8192"
    with RelayProcess(write_config(directory, [Space("acme")], relay_extra=extra)) as proc:
        yield proc


def browser_post(
    relay: RelayProcess,
    content: bytes,
    peer: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=peer)
    with httpx.Client(transport=transport, timeout=PROMPT * 2) as client:
        sent = {"Origin": ORIGIN, "Content-Type": "text/plain", **(headers or {})}
        return client.post(f"{relay.url}/e?k=pk_acme", content=content, headers=sent)


_clients = itertools.count(1)


def next_client() -> dict[str, str]:
    """A client address of its own, through the trusted proxy: out of every other's limit."""
    return {"X-Forwarded-For": f"198.51.100.{next(_clients)}"}


def batch(*events: dict[str, object]) -> bytes:
    return json.dumps({"e": list(events)}).encode()


def assert_others_served(relay: RelayProcess, client_ip: str) -> None:
    """An API event and a browser event (as `client_ip`, via the trusted proxy) get in at once."""
    started = time.monotonic()
    event = {"event_name": "contact", "email": "ok@b.co"}
    assert httpx.post(relay.url + PATH, json=event, headers=KEY, timeout=PROMPT).status_code == 202
    r = browser_post(
        relay, batch({"event_name": "contact"}), headers={"X-Forwarded-For": client_ip}
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert time.monotonic() - started < PROMPT


# --- a flood from one address ---------------------------------------------------------------


def test_a_flood_from_one_address_gets_429_and_others_still_get_in(relay: RelayProcess) -> None:
    flooder = "127.0.0.3"
    answers = [browser_post(relay, batch({"event_name": "contact"}), flooder) for _ in range(25)]
    codes = [a.status_code for a in answers]
    assert set(codes) == {202, 429}
    assert LIMIT <= codes.count(202) <= LIMIT + 2  # a token may refill while the flood runs
    refused = answers[-1]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read it
    # Proxy headers from an untrusted flooder are not believed: no way round its limit.
    spoofed = {"X-Forwarded-For": "203.0.113.99", "Forwarded": "for=203.0.113.99"}
    assert browser_post(relay, batch(), flooder, spoofed).status_code == 429
    # Another address, direct or through the trusted proxy, and the API are untouched.
    assert browser_post(relay, batch({"event_name": "contact"}), "127.0.0.4").status_code == 202
    assert_others_served(relay, "203.0.113.10")


# --- hostile bodies ---------------------------------------------------------------------------

DEEP = b"[" * 3000 + b"]" * 3000  # far deeper than any event, under the 8 KiB limit
HUGE_INT = b"9" * 5000

# (what, API body, browser body, browser status): each is refused, the relay stays up.
HOSTILE = [
    ("deep JSON", b'{"event_name": ' + DEEP + b"}", b'{"e": [' + DEEP + b"]}", 422),
    (
        "deep objects",
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"e": [' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"]}",
        422,
    ),
    (
        "a 5000-digit integer",
        b'{"event_name": "purchase", "email": "a@b.co", "amount": ' + HUGE_INT + b"}",
        b'{"e": [{"event_name": "purchase", "amount": ' + HUGE_INT + b"}]}",
        422,
    ),
    (
        "invalid UTF-8",
        b'{"event_name": "contact", "email": "\xff\xfe@b.co"}',
        b'{"e": [{"event_name": "\xc3\x28"}]}',
        422,
    ),
    (
        "a raw NUL byte",
        b'{"event_name": "contact", "email": "a\x00@b.co"}',
        b'{"e": [{"event_name": "contact\x00"}]}',
        422,
    ),
    (
        "a NUL between tokens",
        b'{"event_name": "contact",\x00 "email": "a@b.co"}',
        b'{"e": \x00[]}',
        422,
    ),
    (
        "a lone surrogate",
        b'{"event_name": "contact", "email": "\\ud800@b.co"}',
        b'{"e": [{"event_name": "contact", "url": "https://a.b/\\udfff"}]}',
        422,
    ),
    (
        "NaN",
        b'{"event_name": "purchase", "email": "a@b.co", "amount": NaN}',
        b'{"e": [{"event_name": "purchase", "amount": NaN}]}',
        422,
    ),
]


@pytest.mark.parametrize(
    ("api_body", "browser_body", "browser_status"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_a_hostile_body_is_refused_and_harms_nobody(
    relay: RelayProcess, api_body: bytes, browser_body: bytes, browser_status: int
) -> None:
    api = httpx.post(relay.url + PATH, content=api_body, headers=KEY, timeout=PROMPT * 2)
    assert api.status_code == 422, api.text
    assert api.json()["message"]
    browser = browser_post(relay, browser_body, headers=next_client())
    assert browser.status_code == browser_status, browser.text
    assert_others_served(relay, "203.0.113.11")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400 + ".5"])
def test_numbers_too_large_for_a_float_are_refused_by_field(
    relay: RelayProcess, number: str
) -> None:
    body = '{"event_name": "purchase", "email": "a@b.co", "amount": ' + number + "}"
    api = httpx.post(relay.url + PATH, content=body, headers=KEY, timeout=PROMPT * 2)
    assert api.status_code == 422 and "amount" in api.json()["errors"]
    sent = b'{"e": [{"event_name": "purchase", "event_id": "n-1", "amount": %s}]}' % number.encode()
    browser = browser_post(relay, sent, headers=next_client())
    assert browser.status_code == 202
    assert browser.json()["accepted"] == 0 and "amount" in browser.json()["refused"][0]["errors"]


def raw_exchange(relay: RelayProcess, request: bytes) -> bytes:
    """Send `request` as it is; the answer, up to the relay's closing the connection."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=PROMPT * 2) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while part := sock.recv(65536):
                answer += part
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Evil: a\x00b\r\n\r\n",
        b"GET /heal\x00thz HTTP/1.1\r\nHost: relay\r\n\r\n",
        b"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhello",
        b"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nContent-Length: -1\r\n\r\n",
        b"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ],
    ids=[
        "NUL in a header",
        "NUL in the path",
        "two lengths",
        "negative length",
        "length and chunked",
    ],
)
def test_a_malformed_request_is_refused_by_the_parser(relay: RelayProcess, head: bytes) -> None:
    answer = raw_exchange(relay, head)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert_others_served(relay, "203.0.113.14")


# --- slow clients -----------------------------------------------------------------------------


def trickle(sock: socket.socket, byte: bytes) -> None:
    """Send one more byte, unless the relay has already refused and closed the connection
    (browser requests past the per-IP limit get a 429 with Connection: close at once)."""
    try:
        sock.sendall(byte)
    except OSError:
        pass


def test_slow_and_idle_connections_do_not_hold_up_others(relay: RelayProcess) -> None:
    # What each slow client has sent so far; none of them ever finishes.
    starts = [
        b"",  # connected, sent nothing
        b"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nOrigin: ",  # half a head
        (  # a browser batch, a few bytes of it
            f"POST /e?k=pk_acme HTTP/1.1\r\nHost: relay\r\nOrigin: {ORIGIN}\r\n"
            'X-Forwarded-For: 203.0.113.15\r\nContent-Length: 4000\r\n\r\n{"e": ['
        ).encode(),
        (  # an API event, a few bytes of it
            f"POST {PATH} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer key-acme-write\r\n"
            'Content-Length: 4000\r\n\r\n{"event_'
        ).encode(),
    ]
    slow = []
    try:
        for start in starts * 25:  # 100 connections
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=PROMPT)
            sock.sendall(start)
            slow.append(sock)
        for n in range(3):
            for sock in slow[1::4]:
                trickle(sock, b"x")  # a trickle keeps them going
            for sock in slow[2::4] + slow[3::4]:
                trickle(sock, b" ")
            assert_others_served(relay, f"203.0.113.{20 + n}")
    finally:
        for sock in slow:
            sock.close()
    assert_others_served(relay, "203.0.113.23")
