"""`comet-relay serve --workers 2` as a user runs it: a real master, two real workers, one
forwarder, on a free loopback port, with real SIGKILLs (issue 15).

Which worker answered is told by the `pid` of the JSON event log's lines (a refusal is logged
with it), and the master logs each process it starts with its pid. Limits are judged by
counts: 2 × the limit sent through both workers; the 202s at least 90 % of the limit and at
most the limit plus what the bucket refilled while the requests were sent (measured as an
upper bound around the sending), so a slow machine cannot make the judgement flap.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from tests.test_forwarder import KEY, PATH, TOKEN_ENV

WORKERS = ["--workers", "2"]


def config(directory: Path, *, space_limit: int = 1_000_000, browser_limit: int = 1_000_000,
           upstream: UpstreamProcess | None = None, rate: int = 600) -> Path:
    extra = f"rate_limit_per_minute = {space_limit}\n"
    if upstream is not None:
        extra += (f'upstream_url = "{upstream.track_url}"\nupstream_token_env = "ACME_TOKEN"\n'
                  f"upstream_rate_per_minute = {rate}\n")
    return write_config(
        directory,
        relay_extra=f'log_format = "json"\nbrowser_rate_limit_per_minute = {browser_limit}',
        spaces=[Space(extra=extra)],
    )


def send_api(relay: RelayProcess, key: str) -> int | None:
    """One event on a connection of its own (so the kernel may hand it to either worker);
    the status, or None when the relay did not answer."""
    body = {"event_name": "lead_generated", "email": "jane@example.com", "idempotency_key": key}
    try:
        with httpx.Client(timeout=10) as client:
            return client.post(f"{relay.url}{PATH}", json=body, headers=KEY).status_code
    except httpx.HTTPError:
        return None


def send_browser(relay: RelayProcess, key: str) -> int | None:
    headers = {"Origin": "https://acme.example", "Content-Type": "text/plain",
               "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
               "X-Forwarded-For": "198.51.100.7"}
    body = json.dumps({"e": [{"event_name": "page_view", "event_id": key}]})
    try:
        with httpx.Client(timeout=10) as client:
            return client.post(f"{relay.url}/e?k=pk_acme", content=body,
                               headers=headers).status_code
    except httpx.HTTPError:
        return None


def in_parallel(send: Callable[[RelayProcess, str], int | None], relay: RelayProcess,
                n: int) -> dict[str, int | None]:
    keys = [str(uuid.uuid4()) for _ in range(n)]
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(keys, pool.map(lambda k: send(relay, k), keys)))


def limited(send: Callable[[RelayProcess, str], int | None], relay: RelayProcess,
            limit: int) -> tuple[int, int]:
    """Send 2 × `limit` events in parallel; the 202s and 429s, checked against the bucket's
    bounds: no fewer than 90 % of the limit (a shared bucket may have refilled a little while
    a worker started), and no more than the limit plus what refills (`limit` a minute) during
    the sending, measured from before the first request to after the last answer."""
    began = time.monotonic()
    statuses = list(in_parallel(send, relay, 2 * limit).values())
    elapsed = time.monotonic() - began
    accepted, refused = statuses.count(202), statuses.count(429)
    assert accepted + refused == 2 * limit, (accepted, refused)
    most = limit + limit / 60.0 * elapsed + 1
    assert limit * 0.9 <= accepted <= most, (accepted, refused, f"elapsed {elapsed:.1f} s")
    return accepted, refused


def log_lines(relay: RelayProcess) -> list[dict[str, Any]]:
    found = []
    for line in relay.log.read_text("utf-8", "replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:  # a line still being written
                pass
    return found


def started(relay: RelayProcess, role: str) -> list[int]:
    """The pids the master started for `role` ("worker", "forwarder"), in order."""
    text = relay.log.read_text("utf-8", "replace")
    return [int(p) for p in re.findall(rf"started {role}\b[^(]*\(pid (\d+)\)", text)]


def refusing_pids(relay: RelayProcess, reason: str) -> set[int]:
    return {r["pid"] for r in log_lines(relay)
            if r.get("outcome") == "rejected" and r.get("reason") == reason}


def stored_keys(directory: Path) -> set[str]:
    conn = sqlite3.connect(directory / "relay.db")
    try:
        return {k for (k,) in conn.execute("SELECT idempotency_key FROM outbox")}
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (already exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1][0] != "Z"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path) as up:
        yield up


def test_every_202_is_on_disk_across_a_sigkill_of_a_worker_and_of_the_master(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(config(tmp_path), args=WORKERS).start()
    try:
        workers = wait_for(lambda: len(w := started(relay, "worker")) >= 2 and w, 20, "2 workers")
        acked = {k for k, s in in_parallel(send_api, relay, 100).items() if s == 202}
        with ThreadPoolExecutor(1) as load:  # requests keep coming while a worker dies
            during = load.submit(in_parallel, send_api, relay, 200)
            os.kill(workers[0], signal.SIGKILL)
            answers = during.result()
        acked |= {k for k, s in answers.items() if s == 202}
        wait_for(lambda: len(started(relay, "worker")) >= 3, 20, "the killed worker's successor")
        acked |= {k for k, s in in_parallel(send_api, relay, 100).items() if s == 202}
        assert len(acked) >= 200
        assert acked <= stored_keys(tmp_path)

        survivors = started(relay, "worker")[1:]
        with ThreadPoolExecutor(1) as load:
            during = load.submit(in_parallel, send_api, relay, 200)
            relay.kill()  # SIGKILL of the master, requests in flight
            answers = during.result()
        acked |= {k for k, s in answers.items() if s == 202}
        # its workers stop by themselves (draining their commits) and free the port
        wait_for(lambda: not any(alive(p) for p in survivors), 20, "the orphaned workers to stop")
        assert acked <= stored_keys(tmp_path)
    finally:
        relay.kill()
        for pid in started(relay, "worker"):  # never leave an orphan behind a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_drains_every_worker_and_exits_cleanly(tmp_path: Path) -> None:
    relay = RelayProcess(config(tmp_path), args=WORKERS).start()
    try:
        workers = wait_for(lambda: len(w := started(relay, "worker")) >= 2 and w, 20, "2 workers")
        with ThreadPoolExecutor(1) as load:
            during = load.submit(in_parallel, send_api, relay, 300)
            wait_for(lambda: len(stored_keys(tmp_path)) >= 50, 20, "some events stored")
            status = relay.stop()
            answers = during.result()
        assert status == 0, relay.log.read_text()[-6000:]
        assert not any(alive(p) for p in workers)
        acked = {k for k, s in answers.items() if s == 202}
        assert acked and acked <= stored_keys(tmp_path)
    finally:
        relay.kill()


def test_the_per_space_limit_holds_across_workers(tmp_path: Path) -> None:
    limit = 100
    with RelayProcess(config(tmp_path, space_limit=limit), args=WORKERS) as relay:
        limited(send_api, relay, limit)
        # both workers answered 429: each saw the other's spending
        assert len(wait_for(lambda: len(p := refusing_pids(relay, "rate_limit")) >= 2 and p,
                            10, "429s from both workers")) == 2


def test_the_per_address_browser_limit_holds_across_workers(tmp_path: Path) -> None:
    limit = 100
    with RelayProcess(config(tmp_path, browser_limit=limit), args=WORKERS) as relay:
        limited(send_browser, relay, limit)
        assert len(wait_for(lambda: len(p := refusing_pids(relay, "rate_limit")) >= 2 and p,
                            10, "429s from both workers")) == 2


def test_one_forwarder_delivers_each_event_once_at_its_pace(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    rate, n = 600, 40
    relay_config = config(tmp_path, upstream=upstream, rate=rate)
    with RelayProcess(relay_config, env=TOKEN_ENV, args=WORKERS) as relay:
        sent = {k for k, s in in_parallel(send_api, relay, n).items() if s == 202}
        assert len(sent) == n

        def delivered() -> list[dict[str, Any]] | None:
            got = events(upstream.received(), 202)
            return got if len(got) >= n else None

        got = wait_for(delivered, 30, f"{n} deliveries")
        keys = [e["idempotency_key"] for e in got]
        assert sorted(keys) == sorted(sent)  # each once
        forwarders = started(relay, "forwarder")
        tries = wait_for(lambda: len(a := attempts(relay.log)) >= n and a, 10, "attempt lines")
        assert {t["pid"] for t in tries} == set(forwarders[:1])  # one forwarder for the file
        assert most_within_a_second(t["started_at"] for t in tries) <= rate // 60 + 1
