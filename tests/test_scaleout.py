"""Scale-out: two relay processes on one Redis behave, from outside, like one relay.

Real processes throughout: two `comet-relay serve` processes with ONE relay.toml whose
`database` is the test Redis (tests/conftest.py), and one fake upstream process
(tests/fake_upstream.py). The relays hold different upstream tokens, so the upstream's record
of each request tells which relay sent it.

The config has two Spaces. "acme" forwards to the upstream at RATE requests a minute and
accepts events freely; "tight" accepts only INBOUND requests a minute, so few that the
limiter's refill (one request every 60 / INBOUND seconds) cannot blur the count of 202s.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.store.base import Change
from relay.store.redis import RedisOutbox
from tests.support import (
    RelayProcess,
    Space,
    UpstreamProcess,
    attempts,
    most_within_a_second,
    wait_for,
    write_config,
)
from tests.test_cli_migrate import use_database
from tests.test_forwarder import KEY, NAP_SLACK, PATH, delivered_keys
from tests.test_outbox import run_with

RATE = 600  # the upstream's requests a minute for "acme", all relays together: 10 a second
INBOUND = 10  # the requests a minute "tight" accepts, all relays together
TIGHT_KEY = {"Authorization": "Bearer key-tight-write"}
DELAY = 1.0  # seconds the upstream takes to answer in the SIGKILL test
TIMEOUT = 2.0  # upstream_timeout_seconds: a crashed relay's leases run out after 2 * 2 + 5 s
NAMES = ("a", "b")


@dataclass
class Cluster:
    """The upstream and the relays (relay `n` sends with the token `token-n`)."""

    upstream: UpstreamProcess
    relays: dict[str, RelayProcess]
    redis_url: str

    def received(self) -> list[dict[str, Any]]:
        return self.upstream.received()

    def queued(self) -> list[int]:
        """What each live relay's /healthz says is still queued in the shared outbox."""
        alive = [r for r in self.relays.values() if r.proc is not None and r.proc.poll() is None]
        return [httpx.get(f"{r.url}/healthz", timeout=5).json()["queued"] for r in alive]

    def settled(self, n: int) -> bool:
        """At least `n` requests reached the upstream and nothing is left to deliver."""
        return len(self.received()) >= n and not any(self.queued())

    def steps(self) -> dict[str, list[Change]]:
        """The shared outbox's record of each event's steps (accepted, retrying, delivered),
        in the order Redis committed them, by idempotency key."""

        async def read(box: RedisOutbox) -> dict[str, list[Change]]:
            steps: dict[str, list[Change]] = {}
            page = await box.changes("{}")  # every Space's log from its start
            while page.changes:
                for change in page.changes:
                    steps.setdefault(change.idempotency_key, []).append(change)
                page = await box.changes(page.cursor)
            return steps

        return run_with(RedisOutbox(self.redis_url), read)


def sender(record: dict[str, Any]) -> str:
    """Which relay sent an upstream request: its token names it."""
    return str(record["authorization"]).removeprefix("Bearer token-")


def r_key(record: dict[str, Any]) -> str:
    """The idempotency key of an upstream request."""
    return str(json.loads(record["body"])["idempotency_key"])


def config_for(directory: Path, upstream: UpstreamProcess, redis_url: str) -> Path:
    """One relay.toml for every relay: the database is the Redis."""
    forward = (
        f'upstream_url = "{upstream.track_url}"\n'
        'upstream_token_env = "ACME_TOKEN"\n'
        f"upstream_rate_per_minute = {RATE}\n"
    )
    config = write_config(
        directory,
        # The event log in JSON: each settled attempt carries when the relay started it.
        relay_extra=f'upstream_timeout_seconds = {TIMEOUT}\nlog_format = "json"',
        spaces=[
            Space(extra=forward + "rate_limit_per_minute = 100000\n"),
            Space("tight", {"key-tight-write": ["events:write"]},
                  f"rate_limit_per_minute = {INBOUND}\n"),
        ],
    )  # fmt: skip
    use_database(config, redis_url)
    return config


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(UpstreamProcess(tmp_path))
        config = config_for(tmp_path, upstream, redis_url)
        relays = {n: RelayProcess(config, env={"ACME_TOKEN": f"token-{n}"}) for n in NAMES}
        for relay in relays.values():
            stack.callback(relay.stop)
            relay.start()
        yield Cluster(upstream, relays, redis_url)


def event(key: str) -> dict[str, str]:
    return {"event_name": "purchase", "email": "s@c.le", "idempotency_key": key}


def post_spread(relays: Sequence[RelayProcess], n: int, prefix: str) -> list[str]:
    """Post `n` events, each relay a share of them at the same time; all must get 202."""
    keys = [f"{prefix}-{i}" for i in range(n)]

    def send(i: int) -> None:
        with httpx.Client(base_url=relays[i].url, headers=KEY, timeout=10) as client:
            for key in keys[i :: len(relays)]:
                answer = client.post(PATH, json=event(key))
                assert answer.status_code == 202, answer.text

    with ThreadPoolExecutor(len(relays)) as pool:
        list(pool.map(send, range(len(relays))))
    return keys


def test_events_spread_over_two_relays_are_delivered_once_within_the_shared_rate(
    cluster: Cluster,
) -> None:
    keys = post_spread(list(cluster.relays.values()), 60, "spread")
    wait_for(lambda: cluster.settled(len(keys)), 40, "every event delivered")

    received = cluster.received()
    assert delivered_keys(cluster.upstream) == Counter({k: 1 for k in keys})
    assert len(received) == len(keys)  # not one request more than events
    by_relay = Counter(sender(r) for r in received)
    assert set(by_relay) == set(NAMES), by_relay  # both relays forwarded
    # One pacer for both, judged by the relays' own records of their starts (arrivals at the
    # upstream add the network's jitter, which a busy machine makes large): the slots the
    # shared pacer gave out are one interval apart whichever relay took them, so the 60
    # events took 5.9 s, not half that as per-process pacing would allow; each relay starts
    # a request in its slot, not before, and never more than RATE/60 in a second.
    tried = {name: attempts(relay.log) for name, relay in cluster.relays.items()}
    assert sum(len(t) for t in tried.values()) == len(received)  # a record of each request
    slots = sorted(a["slot"] for t in tried.values() for a in t)
    interval = 60 / RATE
    gaps_ms = [round((b - a) * 1000) for a, b in itertools.pairwise(slots)]
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(slots)), gaps_ms
    assert slots[-1] - slots[0] >= (len(slots) - 1) * interval - 1e-5
    for name, t in tried.items():
        assert most_within_a_second(a["started_at"] for a in t) <= RATE / 60, name
        assert all(a["started_at"] >= a["slot"] - NAP_SLACK for a in t), name


def test_the_same_key_sent_to_both_relays_at_once_is_queued_once(cluster: Cluster) -> None:
    keys = [f"twin-{i}" for i in range(20)]
    start = threading.Barrier(len(NAMES))

    def send(relay: RelayProcess) -> list[httpx.Response]:
        answers = []
        with httpx.Client(base_url=relay.url, headers=KEY, timeout=10) as client:
            client.get("/healthz")  # connected before the race starts
            for key in keys:
                start.wait(10)
                answers.append(client.post(PATH, json=event(key)))
        return answers

    with ThreadPoolExecutor(len(NAMES)) as pool:
        per_relay = list(pool.map(send, cluster.relays.values()))
    wait_for(lambda: cluster.settled(len(keys)), 20, "every event delivered")

    for key, answers in zip(keys, zip(*per_relay)):
        assert [a.status_code for a in answers] == [202, 202], key
        replayed = sorted(a.headers.get("Idempotent-Replayed", "-") for a in answers)
        assert replayed == ["-", "true"], key  # one queued it, the other saw it queued
        assert {a.headers["Idempotency-Key"] for a in answers} == {key}
    assert delivered_keys(cluster.upstream) == Counter({k: 1 for k in keys})
    assert len(cluster.received()) == len(keys)


def test_the_inbound_rate_limit_is_shared_by_both_relays(cluster: Cluster) -> None:
    clients = [
        httpx.Client(base_url=r.url, headers=TIGHT_KEY, timeout=10) for r in cluster.relays.values()
    ]
    began = time.monotonic()
    try:  # alternately to each relay: apart, each would let INBOUND through
        answers = [
            clients[i % len(clients)].post(PATH, json=event(f"tight-{i}"))
            for i in range(3 * INBOUND)
        ]
    finally:
        for client in clients:
            client.close()
    took = time.monotonic() - began

    assert took < 60 / INBOUND, "too slow to count: the bucket refilled meanwhile"
    assert [a.status_code for a in answers] == [202] * INBOUND + [429] * (2 * INBOUND)
    refused = answers[INBOUND:]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert all(a.headers["X-RateLimit-Remaining"] == "0" for a in refused)


def test_a_relay_killed_mid_delivery_leaves_its_work_to_the_other(cluster: Cluster) -> None:
    cluster.upstream.control(default={"status": 202, "delay": DELAY})  # requests stay in flight
    keys = post_spread(list(cluster.relays.values()), 60, "kill")
    victim, survivor = cluster.relays["a"], cluster.relays["b"]

    def victim_sending() -> bool:
        return sum(sender(r) == "a" for r in cluster.received()) >= 10

    wait_for(victim_sending, 20, "relay a delivering")
    victim.kill()
    killed = time.time()  # relay a is dead: it marks nothing after this
    wait_for(lambda: set(delivered_keys(cluster.upstream)) == set(keys), 60, "b finishing")
    wait_for(lambda: cluster.settled(len(keys)), 20, "nothing left queued")

    received = cluster.received()
    sent = Counter(r_key(r) for r in received)
    steps = cluster.steps()
    # In flight at the kill, by the outbox's own record rather than by a window of time: the
    # events relay a sent that it had not marked delivered when it died (a mark carries the
    # marking relay's clock; b can only take a's events over once their leases have run out).
    marked = {k: next(c.at for c in steps[k] if c.state == "delivered") for k in keys}
    by_a = {r_key(r) for r in received if sender(r) == "a"}
    in_flight = {k for k in by_a if marked[k] > killed}
    assert in_flight, "the kill came when nothing was in flight"
    # Each of them was sent again by b, and nothing else was sent twice; a send beyond that
    # is one the outbox recorded as failed (a timeout on a busy machine), then retried.
    for key in keys:
        retried = sum(c.state == "retrying" for c in steps[key])
        expected = 1 + (key in in_flight)
        assert expected <= sent[key] <= expected + retried, (key, sent[key], steps[key])
    assert all(any(sender(r) == "b" and r_key(r) == k for r in received) for k in in_flight)
    # A request of a's that reached the upstream after its death was already under way.
    assert {r_key(r) for r in received if sender(r) == "a" and r["at"] > killed} <= in_flight
    assert survivor.proc is not None and survivor.proc.poll() is None
