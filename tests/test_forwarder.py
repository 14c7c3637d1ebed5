"""Delivery end to end: a real relay process forwarding to a real, fault-injecting upstream."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import events
from tests.support import RelayProcess, Space, UpstreamProcess, wait_for, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
TOKEN_ENV = {"ACME_TOKEN": "upstream-secret-token"}
IN_FLIGHT_GRACE = 0.25  # requests started before an answer arrived may land this much later


def relay_for(directory: Path, upstream: UpstreamProcess, rate: int = 6000, extra: str = "") -> Path:
    return write_config(directory, relay_extra="upstream_timeout_seconds = 2", spaces=[Space(extra=(
        f'upstream_url = "{upstream.track_url}"\n'
        'upstream_token_env = "ACME_TOKEN"\n'
        f"upstream_rate_per_minute = {rate}\n"
        "rate_limit_per_minute = 100000\n" + extra
    ))])


def post(relay: RelayProcess, n: int, prefix: str, name: str = "purchase") -> list[str]:
    keys = [f"{prefix}-{i}" for i in range(n)]
    with httpx.Client(base_url=relay.url, headers=KEY, timeout=10) as c:
        for k in keys:
            r = c.post(PATH, json={"event_name": name, "email": "f@w.d", "idempotency_key": k})
            assert r.status_code == 202, r.text
    return keys


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    finally:
        conn.close()


def delivered_keys(upstream: UpstreamProcess) -> Counter[str]:
    return Counter(e["idempotency_key"] for e in events(upstream.received(), 202))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path) as up:
        yield up


def test_sends_exactly_what_was_accepted_with_the_token(tmp_path: Path, upstream: UpstreamProcess) -> None:
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        event = {"event_name": "purchase", "email": "a@b.co", "amount": 12.5, "order_id": "o-1",
                 "comet_source": "google"}
        r = httpx.post(f"{relay.url}{PATH}", json=event, headers=KEY)
        key = r.headers["Idempotency-Key"]
        got = wait_for(lambda: upstream.received(), 10, "delivery")
    assert got[0]["authorization"] == "Bearer upstream-secret-token"
    assert json.loads(got[0]["body"]) == {**event, "idempotency_key": key}
    assert counts(tmp_path / "relay.db") == {"delivered": 1}


def test_retries_through_500s_and_dropped_connections_then_delivers_once(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(script=[{"status": 500}, {"drop": True}, {"status": 503}, {"drop": True}])
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        keys = post(relay, 6, "retry")
        wait_for(lambda: len(delivered_keys(upstream)) == 6, 30, "all six delivered")
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})
    statuses = Counter(r["status"] for r in upstream.received())
    assert statuses[500] == 1 and statuses[503] == 1 and statuses["dropped"] == 2
    assert counts(tmp_path / "relay.db") == {"delivered": 6}


def test_429_retry_after_is_honoured_for_the_space(tmp_path: Path, upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"status": 429, "retry_after": "2"}])
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        post(relay, 3, "slow")
        wait_for(lambda: len(delivered_keys(upstream)) == 3, 20, "delivery after 429")
    got = upstream.received()
    assert got[0]["status"] == 429
    # Requests already under way when the 429 came back may land just after it; after that,
    # nothing at all for that Space until Retry-After has passed.
    first = got[0]["at"]
    assert not [r for r in got if first + IN_FLIGHT_GRACE < r["at"] < first + 1.9]
    assert max(r["at"] for r in got) - first >= 1.9


def test_401_pauses_the_space_and_loses_nothing(tmp_path: Path, upstream: UpstreamProcess) -> None:
    upstream.control(default={"status": 401})
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        keys = post(relay, 5, "auth")
        wait_for(lambda: upstream.received(), 10, "a first refused attempt")
        assert counts(tmp_path / "relay.db").get("dead", 0) == 0
        upstream.control(default={"status": 202})
        wait_for(lambda: len(delivered_keys(upstream)) == 5, 30, "delivery after the pause")
        log = relay.log.read_text()
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})
    got = upstream.received()
    first = got[0]["at"]
    # Paused after the first refusal (5 s), not hammering the upstream: only requests already
    # under way when the 401 came back may follow it within the pause.
    assert not [r for r in got if first + IN_FLIGHT_GRACE < r["at"] < first + 4.5]
    assert "UPSTREAM REFUSED THE CREDENTIALS" in log and "upstream-secret-token" not in log


def test_422_goes_to_the_dead_letters_with_the_upstreams_message(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(script=[{"status": 422, "message": "email domain is blocked"}])
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        post(relay, 2, "fatal")
        wait_for(lambda: counts(tmp_path / "relay.db") == {"dead": 1, "delivered": 1}, 15, "dead + delivered")
    conn = sqlite3.connect(tmp_path / "relay.db")
    status, message, attempts = conn.execute(
        "SELECT last_status, last_message, attempts FROM outbox WHERE status = 'dead'"
    ).fetchone()
    conn.close()
    assert (status, attempts) == (422, 1) and "email domain is blocked" in message


def test_pacing_never_exceeds_the_rate_in_any_second(tmp_path: Path, upstream: UpstreamProcess) -> None:
    config = relay_for(tmp_path, upstream, rate=600)  # 10 a second, one every 100 ms
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        post(relay, 40, "paced")
        wait_for(lambda: len(delivered_keys(upstream)) == 40, 30, "40 deliveries")
    times = sorted(r["at"] for r in upstream.received())
    per_second = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert per_second <= 600 / 60 + 1
    assert times[-1] - times[0] >= 39 * 0.1 * 0.95


def test_a_purchase_overtakes_queued_page_views(tmp_path: Path, upstream: UpstreamProcess) -> None:
    config = relay_for(tmp_path, upstream, rate=120)  # two a second: the page views pile up
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        post(relay, 30, "pv", name="view_content")
        post(relay, 1, "buy", name="purchase")
        wait_for(lambda: "buy-0" in delivered_keys(upstream), 20, "the purchase")
    order = [e["idempotency_key"] for e in events(upstream.received())]
    assert order.index("buy-0") <= 6, order[:10]


def test_relay_chain_a_forwards_to_b_which_forwards_upstream(tmp_path: Path, upstream: UpstreamProcess) -> None:
    b_dir, a_dir = tmp_path / "b", tmp_path / "a"
    b_dir.mkdir()
    a_dir.mkdir()
    with RelayProcess(relay_for(b_dir, upstream), env=TOKEN_ENV) as b:
        a_config = write_config(a_dir, relay_extra="upstream_timeout_seconds = 2", spaces=[Space(extra=(
            f'upstream_url = "{b.url}{PATH}"\nupstream_token_env = "B_KEY"\nupstream_rate_per_minute = 6000\n'
        ))])
        with RelayProcess(a_config, env={"B_KEY": "key-acme-write"}) as a:
            keys = post(a, 5, "chain")
            wait_for(lambda: len(delivered_keys(upstream)) == 5, 20, "delivery through the chain")
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})
    assert counts(a_dir / "relay.db") == {"delivered": 5}
    assert counts(b_dir / "relay.db") == {"delivered": 5}


def test_sigkill_during_delivery_then_restart_delivers_everything(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(default={"status": 202, "delay": 0.3})
    config = relay_for(tmp_path, upstream, rate=600)
    relay = RelayProcess(config, env=TOKEN_ENV).start()
    try:
        keys = post(relay, 40, "crash")
        wait_for(lambda: len(upstream.received()) >= 10, 20, "deliveries under way")
        relay.kill()
    finally:
        relay.kill()
    with RelayProcess(config, env=TOKEN_ENV, args=[]):
        wait_for(lambda: set(keys) <= set(delivered_keys(upstream)), 40, "every event after restart")
    twice = [k for k, n in delivered_keys(upstream).items() if n > 1]
    assert len(twice) <= 16  # at most what was in flight at the kill (at-least-once)
