"""Delivery end to end: a real relay process forwarding to a real, fault-injecting upstream."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import events
from tests.support import (
    RelayProcess,
    Space,
    UpstreamProcess,
    attempts,
    most_within_a_second,
    wait_for,
    write_config,
)

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
TOKEN_ENV = {"ACME_TOKEN": "upstream-secret-token"}
# The forwarder naps on the event loop's monotonic clock until a slot of the wall clock; the
# two may drift apart by a little (NTP slews at most 500 ppm), so a start may precede its
# slot by that much over a nap of at most upstream_timeout_seconds.
NAP_SLACK = 0.001
PAUSE_FIRST = 5.0  # relay.delivery.forwarder: the first pause after a 401/403


def relay_for(directory: Path, upstream: UpstreamProcess, rate: int = 6000, extra: str = "") -> Path:
    # The event log in JSON: each settled attempt carries when the relay started it.
    relay_extra = 'upstream_timeout_seconds = 2\nlog_format = "json"'
    return write_config(directory, relay_extra=relay_extra, spaces=[Space(extra=(
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


def key_of(record: dict[str, Any]) -> str:
    """The idempotency key of a request the upstream received."""
    return str(json.loads(record["body"])["idempotency_key"])


def settled_all(relay: RelayProcess, n: int) -> list[dict[str, Any]] | None:
    """The relay's records of its attempts, once `n` of them were delivered."""
    tried = attempts(relay.log)
    return tried if sum(a["outcome"] == "delivered" for a in tried) >= n else None


def waited_for(tried: list[dict[str, Any]], until: float) -> None:
    """Each attempt in `tried` was started in a slot at or after `until`, and not before it."""
    for a in tried:
        assert a["slot"] >= until, a
        assert a["started_at"] >= a["slot"] - NAP_SLACK, a


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
    retry_after = 2.0
    upstream.control(script=[{"status": 429, "retry_after": f"{retry_after:g}"}])
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        first = post(relay, 3, "slow")  # one gets the 429; the others may be under way by then

        def slowed_down() -> list[dict[str, Any]]:
            return [a for a in attempts(relay.log) if a["upstream_status"] == 429]

        # The relay's record of the 429 is written once the Space's hold is in place.
        (told,) = wait_for(slowed_down, 20, "the 429 settled")
        later = post(relay, 3, "later")  # queued while the Space waits
        tried = wait_for(lambda: settled_all(relay, 6), 30, "delivery after the 429")
    got = upstream.received()
    assert delivered_keys(upstream) == Counter({k: 1 for k in first + later})
    assert got[0]["status"] == 429 and [r["status"] for r in got].count(429) == 1
    refused, hold_end = key_of(got[0]), told["next_attempt_at"]
    assert told["event_id"] == refused and hold_end >= got[0]["at"] + retry_after
    # What was in flight when the 429 came back may land at once; nothing that started after
    # it did: the refused event again and the later ones wait until Retry-After has passed,
    # by the relay's record of their starts and by their arrival at the upstream.
    waited = set(later)
    waited_for([a for a in tried if a["event_id"] in waited], hold_end)
    waited_for([a for a in tried if a["event_id"] == refused][1:], hold_end)
    again = [r for r in got[1:] if key_of(r) == refused]
    assert len(again) == 1
    for r in again + [r for r in got if key_of(r) in waited]:
        assert r["at"] >= got[0]["at"] + retry_after, r


def test_401_pauses_the_space_and_loses_nothing(tmp_path: Path, upstream: UpstreamProcess) -> None:
    upstream.control(default={"status": 401})
    with RelayProcess(relay_for(tmp_path, upstream), env=TOKEN_ENV) as relay:
        keys = post(relay, 5, "auth")
        # Logged once the Space's hold is in place.
        wait_for(lambda: "UPSTREAM REFUSED THE CREDENTIALS" in relay.log.read_text(), 15, "a pause")
        assert counts(tmp_path / "relay.db").get("dead", 0) == 0
        upstream.control(default={"status": 202})
        later = post(relay, 3, "later")  # queued while the Space is paused
        tried = wait_for(lambda: settled_all(relay, 8), 40, "delivery after the pause")
        log = relay.log.read_text()
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys + later})
    got = upstream.received()
    assert got[0]["status"] == 401
    pause_end = got[0]["at"] + PAUSE_FIRST  # the pause began when the first 401 came back
    # Paused after the first refusal, not hammering the upstream: only requests already under
    # way when the 401 came back may follow it; an event refused is not sent again, and an
    # event queued meanwhile is not sent, before the pause is over. By the relay's record of
    # its starts and by the arrivals at the upstream:
    refused = {key_of(r) for r in got if r["status"] == 401}
    resent = [r for k in refused for r in [r for r in got if key_of(r) == k][1:]]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for a in tried:
        by_key.setdefault(a["event_id"], []).append(a)
    waited_for([a for k in refused for a in by_key[k][1:]], pause_end)
    waited_for([a for k in later for a in by_key[k]], pause_end)
    for r in resent + [r for r in got if key_of(r) in later]:
        assert r["at"] >= pause_end, r
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
    rate = 600  # 10 a second, one every 100 ms
    config = relay_for(tmp_path, upstream, rate=rate)
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        keys = post(relay, 40, "paced")
        tried = wait_for(lambda: settled_all(relay, 40), 30, "40 deliveries")
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})
    # Judged by the relay's own record of its starts, not by arrivals at the upstream (which
    # a busy machine can bunch together): no second holds more than rate/60 starts, and the
    # pacer's slots are one interval apart, so the 40 take 3.9 s at least.
    starts = [a["started_at"] for a in tried]
    assert most_within_a_second(starts) <= rate / 60, sorted(starts)
    slots = sorted(a["slot"] for a in tried)
    interval = 60 / rate
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(slots)), slots
    assert slots[-1] - slots[0] >= (len(slots) - 1) * interval - 1e-5
    assert all(a["started_at"] >= a["slot"] - NAP_SLACK for a in tried)


def test_a_purchase_overtakes_queued_page_views(tmp_path: Path, upstream: UpstreamProcess) -> None:
    config = relay_for(tmp_path, upstream, rate=120)  # two a second: the page views pile up
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        post(relay, 30, "pv", name="view_content")
        post(relay, 1, "buy", name="purchase")
        queued = time.time()  # the purchase is committed: its 202 came
        tried = wait_for(
            lambda: (t := attempts(relay.log)) and "buy-0" in {a["event_id"] for a in t} and t,
            20, "the purchase",
        )
    # However long the page views took to post, the purchase is the next event claimed once
    # it is queued: at most the one page view already claimed is started before it.
    (buy,) = [a for a in tried if a["event_id"] == "buy-0"]
    overtaken = [a for a in tried if a["event_id"] != "buy-0" and a["started_at"] < buy["started_at"]]
    assert len([a for a in overtaken if a["started_at"] > queued]) <= 1, overtaken


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
