"""Security: whose address is the client's (docs/CONTRACT.md §3: `ip` through trusted proxies only).

One real relay trusts 127.0.0.1 and 10.0.0.0/8. A request from 127.0.0.1 plays a trusted
reverse proxy; one from 127.0.0.2 (still loopback, but not trusted) plays a client on the
internet that writes proxy headers itself. The address the relay settled on is read back
from the queued event's `ip` (set for events with a fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from http.cookies import SimpleCookie

import httpx
import pytest

from relay.enrich.browser_event import browser_event
from relay.enrich.client import Client, client_address
from relay.limits.base import address_bucket
from tests.support import RelayProcess, Space, write_config
from tests.test_api_http import stored

ORIGIN = "https://acme.example"
UNTRUSTED_PEER = "127.0.0.2"
Headers = Sequence[tuple[str, str]]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("security-proxy")
    config = write_config(directory, [Space("acme")])
    text = config.read_text()
    config.write_text(text.replace('["127.0.0.1"]', '["127.0.0.1", "10.0.0.0/8"]', 1))
    with RelayProcess(config) as proc:
        yield proc


def send(
    relay: RelayProcess, event_id: str, headers: Headers = (), peer: str = "127.0.0.1"
) -> httpx.Response:
    """One browser event with a fingerprint, sent from the loopback address `peer`."""
    body = json.dumps({"e": [{"event_name": "contact", "event_id": event_id, "fingerprint": "fp"}]})
    sent = [("Origin", ORIGIN), ("Content-Type", "text/plain"), *headers]
    transport = httpx.HTTPTransport(local_address=peer)
    with httpx.Client(transport=transport, timeout=10) as client:
        r = client.post(f"{relay.url}/e?k=pk_acme", content=body, headers=sent)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1, r.text
    return r


def ip_of(relay: RelayProcess, event_id: str) -> object:
    (event,) = stored(relay, event_id)
    return event.get("ip")


FORGED = [
    ("X-Forwarded-For", "203.0.113.66"),
    ("Forwarded", "for=203.0.113.66;proto=https"),
    ("X-Real-IP", "203.0.113.66"),
    ("True-Client-IP", "203.0.113.66"),
    ("CF-Connecting-IP", "203.0.113.66"),
    ("X-Forwarded-Proto", "https"),
]


def test_proxy_headers_from_an_untrusted_peer_are_ignored(relay: RelayProcess) -> None:
    r = send(relay, "untrusted-1", FORGED, peer=UNTRUSTED_PEER)
    assert ip_of(relay, "untrusted-1") == UNTRUSTED_PEER
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(r.headers["set-cookie"])
    assert not cookie["_comet"]["secure"]  # X-Forwarded-Proto was not believed either


def test_an_untrusted_peer_cannot_pose_as_a_trusted_proxy(relay: RelayProcess) -> None:
    # Naming a trusted proxy as the last hop does not make the sender one.
    headers = [("X-Forwarded-For", "203.0.113.66, 127.0.0.1, 10.0.0.1")]
    send(relay, "untrusted-2", headers, peer=UNTRUSTED_PEER)
    assert ip_of(relay, "untrusted-2") == UNTRUSTED_PEER


def test_from_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
    relay: RelayProcess,
) -> None:
    # The client forged the first two entries; 198.51.100.4 is what our outer proxy (10.1.2.3)
    # saw, and 10.1.2.3 is what the inner proxy (the peer, 127.0.0.1) saw.
    headers = [("X-Forwarded-For", "6.6.6.6, 127.0.0.1, 198.51.100.4, 10.1.2.3")]
    send(relay, "chain-1", headers)
    assert ip_of(relay, "chain-1") == "198.51.100.4"


def test_repeated_x_forwarded_for_headers_count_as_one_list(relay: RelayProcess) -> None:
    headers = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.5, 10.0.0.9")]
    send(relay, "chain-2", headers)
    assert ip_of(relay, "chain-2") == "198.51.100.5"


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        ("198.51.100.6:51234", "198.51.100.6"),
        ("[2001:db8::6]:443", "2001:db8::6"),
        ("2001:DB8:0:0::7", "2001:db8::7"),
    ],
)
def test_a_hop_with_a_port_or_in_long_form_gives_the_bare_address(
    relay: RelayProcess, hop: str, expected: str
) -> None:
    event_id = f"form-{expected}"
    send(relay, event_id, [("X-Forwarded-For", hop)])
    assert ip_of(relay, event_id) == expected


def test_only_x_forwarded_for_is_read_even_from_a_trusted_proxy(relay: RelayProcess) -> None:
    # uvicorn's proxy handling reads X-Forwarded-For; a proxy must send that. Forwarded,
    # X-Real-IP and the CDN headers are never read, so they cannot be forged past a proxy
    # that passes them through unchanged.
    send(relay, "trusted-forwarded", FORGED[1:-1])
    assert ip_of(relay, "trusted-forwarded") == "127.0.0.1"


@pytest.mark.parametrize("hop", ["unknown", "_hidden", "not an address", "999.1.1.1"])
def test_a_hop_that_is_no_address_never_becomes_the_ip(relay: RelayProcess, hop: str) -> None:
    # A proxy may write a word there (nginx's realip and HAProxy pass `unknown`, RFC 7239 has
    # obfuscated `_hidden`). The event is kept, identified by its comet_token, without ip and
    # fingerprint (the API takes neither alone).
    event_id = f"word-{hop}"
    send(relay, event_id, [("X-Forwarded-For", hop)])
    (event,) = stored(relay, event_id)
    assert "ip" not in event and "fingerprint" not in event
    assert event["comet_token"]


# --- the pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # a dual-stack socket's view of an IPv4 client
        ("unknown", None),
        (" 203.0.113.7", None),
        ("", None),
        (None, None),
    ],
)
def test_client_address(host: str | None, expected: str | None) -> None:
    assert client_address(host) == expected


def test_a_forged_ip_in_the_event_never_beats_the_client_address() -> None:
    sent = {"event_name": "contact", "fingerprint": "fp", "ip": "6.6.6.6"}
    client = Client(ip="::ffff:203.0.113.7", user_agent=None, comet_token="t" * 22)
    event, errors = browser_event(sent, client, frozenset(), 1_800_000_000.0)
    assert errors == {} and event["ip"] == "203.0.113.7"
    no_address = Client(ip="unknown", user_agent=None, comet_token="t" * 22)
    event, errors = browser_event(sent, no_address, frozenset(), 1_800_000_000.0)
    assert errors == {} and "ip" not in event and "fingerprint" not in event


def rate_key(host: str | None) -> str:
    """The browser endpoint's per-address bucket of a peer address."""
    return address_bucket(client_address(host))


def test_rate_key_gives_an_ipv6_client_one_bucket_per_64() -> None:
    assert rate_key("203.0.113.7") == "ip:203.0.113.7"
    assert rate_key("::ffff:203.0.113.7") == "ip:203.0.113.7"
    assert rate_key("2001:db8:1:2::1") == rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert rate_key("2001:db8:1:2::1") == "ip:2001:db8:1:2::/64"
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key("unknown") == rate_key(None)
