"""Security: API keys. Every kind of bad key gets the same 401; keys live on disk only hashed.

The revoked key is real: it is accepted by a first relay process, then its block is removed
from relay.toml (the documented way to revoke) and a second process on the same files runs the
checks. tests/test_api_http.py already shows the 401 message is the same for a missing,
malformed and unknown key; here the whole answer (status, body bytes, headers) is compared,
for the revoked key and for look-alikes of a real one too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from relay.auth import api_keys as auth
from relay.auth.api_keys import KeyRing
from relay.errors import Unauthorized
from relay.settings import ApiKey
from relay.settings import Space as SpaceSettings
from tests.support import RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"
LIVE = "key-acme-live-0123456789"
REVOKED = "key-acme-revoked-0123456789"
EVENT = {"event_name": "purchase", "email": "a@b.co", "amount": 1}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("security-keys")
    both = {LIVE: ["events:write"], REVOKED: ["events:write"]}
    config = write_config(directory, [Space("acme", keys=both)])
    with RelayProcess(config) as before:
        for key in (LIVE, REVOKED):
            r = httpx.post(
                before.url + PATH, json=EVENT, headers={"Authorization": f"Bearer {key}"}
            )
            assert r.status_code == 202, r.text
    write_config(directory, [Space("acme", keys={LIVE: ["events:write"]})])  # revoke
    with RelayProcess(config) as after:
        yield after


def answer(relay: RelayProcess, authorization: str | bytes | None, body: bytes) -> httpx.Response:
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.post(relay.url + PATH, content=body, headers=headers, timeout=10)


def shape(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Everything an attacker sees of an answer, but the clock."""
    headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
    return response.status_code, response.content, headers


BAD = {
    "missing": None,
    "empty": "",
    "other scheme": f"Basic {LIVE}",
    "no key": "Bearer",
    "two words": f"Bearer {LIVE} extra",
    "unknown": "Bearer key-acme-nope-0123456789",
    "revoked": f"Bearer {REVOKED}",
    "live key's hash": f"Bearer {hashlib.sha256(LIVE.encode()).hexdigest()}",
    "one character off": f"Bearer {LIVE[:-1]}8",
    "a prefix": f"Bearer {LIVE[:-1]}",
    "upper case": f"Bearer {LIVE.upper()}",
    "huge": "Bearer " + "k" * 8000,
    "latin-1": b"Bearer key-\xe9",
    "utf-8": "Bearer key-\u00e9\u4e2d".encode(),
}


@pytest.mark.parametrize("body", [json.dumps(EVENT).encode(), b"not json \x00\xff"])
def test_every_bad_key_gets_the_very_same_401(relay: RelayProcess, body: bytes) -> None:
    reference = shape(answer(relay, None, body))
    assert reference[0] == 401
    for kind, authorization in BAD.items():
        got = answer(relay, authorization, body)
        assert shape(got) == reference, kind
    assert answer(relay, f"Bearer {LIVE}", json.dumps(EVENT).encode()).status_code == 202


def test_keys_are_on_disk_only_hashed(relay: RelayProcess) -> None:
    # Every file of the relay: relay.toml, the SQLite database and its journal, its log.
    files = [path for path in relay.config.parent.rglob("*") if path.is_file()]
    assert any(path.name.startswith("relay.db") for path in files)
    for path in files:
        data = path.read_bytes()
        for key in (LIVE, REVOKED):
            assert key.encode() not in data, f"{key} in {path}"
    assert hashlib.sha256(LIVE.encode()).hexdigest() in relay.config.read_text()


def test_the_lookup_compares_every_key_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"key-{n}" for n in range(5)]
    space = SpaceSettings(
        "s", api_keys=tuple(ApiKey(hashlib.sha256(k.encode()).hexdigest()) for k in keys)
    )
    ring = KeyRing([space])
    compared: list[int] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for sent in (keys[0], keys[4], "key-none"):
        compared.clear()
        try:
            ring.authenticate(f"Bearer {sent}")
        except Unauthorized:
            pass
        assert len(compared) == len(keys), sent


def test_the_key_ring_holds_no_plain_key() -> None:
    space = SpaceSettings("s", api_keys=(ApiKey(hashlib.sha256(LIVE.encode()).hexdigest()),))
    ring = KeyRing([space])
    held = repr(vars(ring)).encode() + b"".join(d for d, _, _ in ring._keys)
    assert LIVE.encode() not in held
    found, _ = ring.authenticate(f"Bearer {LIVE}")
    assert found is space
