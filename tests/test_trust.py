"""Trust tiers over real sockets: a real relay, the fake upstream, forged browser events sent
with nothing but the public site key (docs/SECURITY.md, "Trust tiers").

The shop's own events come through the Create Event API with a secret key; whatever claims
their key or order from a browser can neither replace, erase nor delay them, and the twins
the shop itself produces (a purchase from its backend, the pixel's from the thank-you page)
reach the upstream as one event, with the money from the API and the visit from the browser.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import events
from tests.support import RelayProcess, Space, UpstreamProcess, wait_for, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
TOKEN_ENV = {"ACME_TOKEN": "upstream-secret-token"}
ORIGIN = "https://acme.example"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path) as up:
        yield up


def relay_config(
    directory: Path, upstream: UpstreamProcess, *, window: float = 30, rate: int = 6000,
    extra: str = "", browser_limit: int = 100000,
) -> Path:
    return write_config(
        directory,
        relay_extra=f"upstream_timeout_seconds = 2\nbrowser_rate_limit_per_minute = {browser_limit}",
        spaces=[Space(extra=(
            f'upstream_url = "{upstream.track_url}"\nupstream_token_env = "ACME_TOKEN"\n'
            f"upstream_rate_per_minute = {rate}\nrate_limit_per_minute = 100000\n"
            f"twin_window_seconds = {window}\n{extra}"
        ))],
    )


def api(relay: RelayProcess, **event: Any) -> httpx.Response:
    body = {"event_name": "purchase", **event}
    return httpx.post(f"{relay.url}{PATH}", json=body, headers=KEY, timeout=10)


def browser(
    relay: RelayProcess, *sent: dict[str, Any], address: str = "198.51.100.7"
) -> httpx.Response:
    """Events as any program can send them with the public site key (the relay trusts the
    loopback proxy, so `address` is the client's address it sees)."""
    headers = {"Origin": ORIGIN, "User-Agent": CHROME, "Content-Type": "text/plain",
               "X-Forwarded-For": address}
    body = json.dumps({"e": [{"event_name": "purchase", **e} for e in sent]})
    return httpx.post(f"{relay.url}/e?k=pk_acme", content=body, headers=headers, timeout=10)


def delivered(upstream: UpstreamProcess, n: int, what: str) -> list[dict[str, Any]]:
    return wait_for(lambda: (got := events(upstream.received(), 202)) and len(got) >= n and got,
                    20, what)


def stored(directory: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(directory / "relay.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_forged_order_claim_cannot_replace_the_real_purchase(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    with RelayProcess(relay_config(tmp_path, upstream), env=TOKEN_ENV) as relay:
        forged = browser(relay, {"order_id": "20418", "amount": 0.01, "email": "attacker@x.example",
                                 "event_id": "forged-1", "comet_campaign": "attacker"})
        assert forged.json()["accepted"] == 1
        real = api(relay, order_id="20418", amount=120, email="jane@shop.example",
                   idempotency_key=str(uuid.uuid4()))
        assert real.status_code == 202 and "Idempotent-Replayed" not in real.headers
        assert real.json()["outcome"] == "merged" and real.json()["merged_with"] == "forged-1"
        (sent,) = delivered(upstream, 1, "the purchase")
        assert (sent["amount"], sent["email"]) == (120, "jane@shop.example")
        assert sent["idempotency_key"] == real.headers["Idempotency-Key"]
        # what a forger can still attach by guessing the order (SECURITY.md): its visit
        assert sent["comet_campaign"] == "attacker"
        assert len(events(upstream.received())) == 1


def test_a_forged_key_claim_cannot_replace_the_real_purchase(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    with RelayProcess(relay_config(tmp_path, upstream), env=TOKEN_ENV) as relay:
        browser(relay, {"event_id": "evt-9", "amount": 0.01, "email": "attacker@x.example"})
        real = api(relay, idempotency_key="evt-9", amount=49, email="jane@shop.example")
        assert real.json()["outcome"] == "merged"
        (sent,) = delivered(upstream, 1, "the purchase")
        assert (sent["idempotency_key"], sent["amount"], sent["email"]) == (
            "evt-9", 49, "jane@shop.example"
        )


def test_a_page_view_holding_a_key_does_not_make_a_purchase_a_duplicate(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    with RelayProcess(relay_config(tmp_path, upstream, window=0), env=TOKEN_ENV) as relay:
        view = browser(relay, {"event_name": "view_content", "event_id": "X"})
        assert view.json()["accepted"] == 1
        real = api(relay, idempotency_key="X", amount=49, email="jane@shop.example")
        assert real.json()["outcome"] == "accepted" and "Idempotent-Replayed" not in real.headers
        sent = delivered(upstream, 2, "the page view and the purchase")
        assert sorted(e["event_name"] for e in sent) == ["purchase", "view_content"]


VISIT = {"event_id": "order-77-px", "fingerprint": "fp-1", "url": "https://acme.example/thanks",
         "comet_campaign": "spring", "comet_source": "facebook"}
MONEY = {"idempotency_key": "order-77-px", "amount": 77.5, "order_id": "77",
         "email": "jane@shop.example", "event_time": 1_800_000_000}


def check_merged(sent: dict[str, Any], relay_ip: str = "198.51.100.7") -> None:
    """Field by field: the API's fields, and the browser's where the API left a gap."""
    for name in ("idempotency_key", "amount", "order_id", "email", "event_time"):
        assert sent[name] == MONEY[name], name
    assert (sent["fingerprint"], sent["ip"], sent["user_agent"]) == ("fp-1", relay_ip, CHROME)
    assert (sent["url"], sent["comet_campaign"], sent["comet_source"]) == (
        VISIT["url"], "spring", "facebook"
    )
    assert isinstance(sent["comet_token"], str) and len(sent["comet_token"]) >= 16


@pytest.mark.parametrize("api_first", [True, False], ids=["api-first", "browser-first"])
def test_legitimate_twins_become_one_event_in_both_orders(
    tmp_path: Path, upstream: UpstreamProcess, api_first: bool
) -> None:
    with RelayProcess(relay_config(tmp_path, upstream), env=TOKEN_ENV) as relay:
        if api_first:
            assert api(relay, **MONEY).json()["outcome"] == "accepted"
            assert browser(relay, VISIT).json()["merged"] == 1
        else:
            assert browser(relay, VISIT).json()["accepted"] == 1
            assert api(relay, **MONEY).json()["outcome"] == "merged"
        (sent,) = delivered(upstream, 1, "the merged purchase")
        check_merged(sent)
        # the hold ended with the merge: delivered long before the 30 s window
        (due,) = stored(tmp_path, "SELECT next_attempt_at - received_at FROM outbox")
        assert due[0] < 30


def test_twins_after_the_window(tmp_path: Path, upstream: UpstreamProcess) -> None:
    """Once an event is sent, a browser twin is a duplicate; an API twin of a sent browser
    event is sent too (the relay never drops the shop's event)."""
    with RelayProcess(relay_config(tmp_path, upstream, window=0), env=TOKEN_ENV) as relay:
        api(relay, idempotency_key="A", email="a@shop.example")
        delivered(upstream, 1, "the API purchase")
        late = browser(relay, {"event_id": "A"})
        assert (late.json()["accepted"], late.json()["duplicates"]) == (0, 1)
        browser(relay, {"event_id": "B"})
        delivered(upstream, 2, "the browser purchase")
        late_api = api(relay, idempotency_key="B", email="b@shop.example", amount=5)
        assert late_api.json()["outcome"] == "accepted"
        sent = delivered(upstream, 3, "the late API purchase")
        assert [e["idempotency_key"] for e in sent] == ["A", "B", "B"]
        assert sent[2]["amount"] == 5


def test_a_flood_of_forged_purchases_does_not_delay_an_api_purchase(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    """1,000 forged browser purchases from 20 addresses, then one API purchase: once its own
    window has passed, it overtakes every forged one still queued."""
    config = relay_config(tmp_path, upstream, window=1, rate=600)  # 10 a second upstream
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        for address in range(20):
            batch = [{"event_id": f"f-{address}-{i}", "amount": 1} for i in range(50)]
            r = browser(relay, *batch, address=f"203.0.113.{address}")
            assert r.json()["accepted"] == 50
        assert api(relay, idempotency_key="real", amount=120, email="j@shop.example").json()[
            "outcome"] == "accepted"
        wait_for(lambda: any(e["idempotency_key"] == "real"
                             for e in events(upstream.received(), 202)), 30, "the API purchase")
        received = [e["idempotency_key"] for e in events(upstream.received(), 202)]
        position = received.index("real")
        # At 10 a second, the API purchase's window (1 s) and the requests in flight let a
        # few seconds' worth of forged ones go first; never the 1,000 queued before it.
        assert position < 60, f"{position} forged purchases went before the shop's"
        queued = stored(tmp_path, "SELECT count(*) FROM outbox WHERE status = 'queued'")
        assert queued[0][0] > 900


def test_the_browser_limit_counts_events_not_requests(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    with RelayProcess(relay_config(tmp_path, upstream, browser_limit=10), env=TOKEN_ENV) as relay:
        first = browser(relay, *({"event_id": f"a{i}"} for i in range(8)))
        assert first.status_code == 202 and first.json()["accepted"] == 8
        second = browser(relay, *({"event_id": f"b{i}"} for i in range(5)))  # 2 left
        assert second.status_code == 429
        assert "events from this address" in second.json()["message"]
        other = browser(relay, *({"event_id": f"c{i}"} for i in range(5)), address="192.0.2.9")
        assert other.status_code == 202


def test_twin_window_zero_holds_nothing_and_the_default_holds_conversions(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    held_dir, free_dir = tmp_path / "held", tmp_path / "free"
    held_dir.mkdir()
    free_dir.mkdir()
    config = write_config(held_dir, spaces=[Space(extra="twin_window_seconds = 60")])
    with RelayProcess(config) as relay:
        api(relay, idempotency_key="p", email="a@shop.example")
        browser(relay, {"event_name": "view_content", "event_id": "v"})
    with RelayProcess(relay_config(free_dir, upstream, window=0), env=TOKEN_ENV) as relay:
        api(relay, idempotency_key="p", email="a@shop.example")
        delivered(upstream, 1, "the unheld purchase")
    held = dict(stored(held_dir, "SELECT idempotency_key, next_attempt_at - received_at FROM outbox"))
    assert held == {"p": pytest.approx(60), "v": 0}  # a page view is never held
    free = stored(free_dir, "SELECT next_attempt_at - received_at FROM outbox")
    assert free == [(0,)]


def test_the_debugger_ledger_shows_source_hold_merge_and_supersede(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    admin = "admin-token-0123456789abcdef"
    config = relay_config(tmp_path, upstream, extra="", window=30)
    text = config.read_text().replace("[relay]\n", '[relay]\nadmin_token_env = "COMET_ADMIN"\n')
    config.write_text(text)
    with RelayProcess(config, env={**TOKEN_ENV, "COMET_ADMIN": admin}) as relay:
        browser(relay, {"event_id": "twin-1", "fingerprint": "fp"})
        api(relay, idempotency_key="twin-1", amount=10, email="j@shop.example")
        api(relay, idempotency_key="solo", amount=5, email="j@shop.example")
        delivered(upstream, 1, "the merged purchase")

        def ledger(key: str) -> list[tuple[str, str]]:
            found = httpx.get(f"{relay.url}/debug/search", params={"q": key},
                              headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
            return [(s["source"], s["stage"]) for s in found["sightings"]]

        assert ledger("twin-1")[:3] == [
            ("browser", "held"), ("api", "merged"), ("browser", "superseded")
        ]
        wait_for(lambda: ("forwarder", "delivered") in ledger("twin-1"), 20,
                 "the delivery in the ledger")
        assert ledger("solo") == [("api", "held")]  # waits for its twin
