"""`comet-relay forward`: the forwarder as its own process, several on one SQLite file.

Real processes throughout: forwarders started as `python -m relay.cli forward`, the fake
upstream from tests/fake_upstream.py, signals sent as an init system would send them. The
last two tests drive a Forwarder in-process with an injected clock instead.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from relay.cli import main
from relay.delivery.forwarder import Forwarder
from relay.delivery.upstream import Upstream
from relay.settings import Settings
from relay.settings import Space as SpaceSettings
from relay.store import open_outbox
from relay.store.base import NewEvent
from relay.store.sqlite import SQLiteOutbox
from tests import test_forwarder
from tests.fake_upstream import events
from tests.support import ROOT, Space, UpstreamProcess, wait_for, write_config
from tests.test_forwarder import TOKEN_ENV, delivered_keys

CONCURRENCY = 16  # the Forwarder's default: at most this many requests in flight per Space
upstream = test_forwarder.upstream  # the fixture: a fake upstream process for each test


class ForwardProcess:
    """`comet-relay forward` in a child process; its stdout and stderr go to a log file."""

    def __init__(self, config: Path, name: str, shutdown_timeout: float | None = None) -> None:
        self.config = config
        self.log = config.parent / f"forward-{name}.log"
        self.args = ["--shutdown-timeout", str(shutdown_timeout)] if shutdown_timeout else []
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> ForwardProcess:
        """Start the process without waiting for it (see `ready`)."""
        cmd = [sys.executable, "-m", "relay.cli", "forward", "--config", str(self.config)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, *self.args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, **TOKEN_ENV},
            )
        return self

    def ready(self) -> ForwardProcess:
        """Wait until the forwarder runs (it logs the Spaces it forwards)."""

        def started() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"forward exited with {self.proc.returncode}: {self.text()}")
            return "forwarding from" in self.text()

        wait_for(started, 20, f"forward process (log: {self.log})")
        return self

    def start(self) -> ForwardProcess:
        return self.spawn().ready()

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns the exit status and the seconds the process took to exit."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def delivered_here(self) -> int:
        """How many events this process says it delivered (it logs that when it stops)."""
        found = re.findall(r"Space acme: (\d+) event\(s\) delivered by this process", self.text())
        assert found, self.text()
        return int(found[-1])


def config_for(directory: Path, upstream: UpstreamProcess, timeout: float = 5.0) -> Path:
    """A relay.toml whose one Space forwards to `upstream` at 6000 a minute."""
    return write_config(directory, relay_extra=f"upstream_timeout_seconds = {timeout}", spaces=[
        Space(extra=(
            f'upstream_url = "{upstream.track_url}"\n'
            'upstream_token_env = "ACME_TOKEN"\n'
            "upstream_rate_per_minute = 6000\n"
        ))
    ])


def enqueue(database: Path | str, keys: list[str]) -> None:
    """Queue one purchase per key straight into the outbox (a SQLite file or a Redis URL), as
    the API would."""

    async def fill() -> None:
        box = open_outbox(str(database))
        await box.start()
        try:
            now = time.time()
            await box.enqueue([
                NewEvent("acme", "purchase", key,
                         json.dumps({"event_name": "purchase", "idempotency_key": key}).encode(),
                         (f"idem:{key}",), now + 3600, now)
                for key in keys
            ], now)
        finally:
            await box.close()

    asyncio.run(fill())


def rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(database)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def status_counts(database: Path) -> dict[str, int]:
    return dict(rows(database, "SELECT status, count(*) FROM outbox GROUP BY status"))


def leased(database: Path) -> int:
    """Events under a lease: none may be left after a bounded shutdown."""
    return int(rows(database, "SELECT count(*) FROM outbox WHERE lease_until IS NOT NULL")[0][0])


def test_two_forward_processes_on_one_file_deliver_each_event_once(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(default={"status": 202, "delay": 0.05})  # keeps requests in flight
    config = config_for(tmp_path, upstream)
    keys = [f"twin-{i}" for i in range(400)]
    one, two = ForwardProcess(config, "one"), ForwardProcess(config, "two")
    try:
        one.spawn(), two.spawn()  # both open the new file at once
        one.ready(), two.ready()
        # The backlog comes once both are running (each looks for work every 0.5 s), so a
        # slow start cannot leave one of them nothing: 4 s of work at 100 a second together.
        enqueue(tmp_path / "relay.db", keys)
        wait_for(lambda: status_counts(tmp_path / "relay.db") == {"delivered": 400}, 60,
                 "the backlog delivered")
        assert one.terminate()[0] == 0 and two.terminate()[0] == 0
    finally:
        one.kill()
        two.kill()
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})
    assert len(upstream.received()) == 400  # not one request more than events
    assert one.delivered_here() > 0 and two.delivered_here() > 0  # both took part
    assert one.delivered_here() + two.delivered_here() == 400
    assert all(r["authorization"] == "Bearer upstream-secret-token" for r in upstream.received())
    # One pace for both, kept in the file: 100 starts a second together, not 100 each, so
    # the 400 take 4 s, not 2. (A late start only lengthens this; the first one being late
    # could shorten it by its delay, hence the 0.3 s.)
    arrivals = sorted(r["at"] for r in upstream.received())
    assert arrivals[-1] - arrivals[0] >= 399 * 60 / 6000 - 0.3


def test_sigterm_lets_requests_in_flight_finish_and_a_restart_delivers_the_rest(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(default={"status": 202, "delay": 1.0})
    config = config_for(tmp_path, upstream)
    db = tmp_path / "relay.db"
    keys = [f"calm-{i}" for i in range(200)]
    enqueue(db, keys)
    first = ForwardProcess(config, "first", shutdown_timeout=8).start()
    try:
        wait_for(lambda: len(upstream.received()) >= 10, 20, "requests in flight")
        code, took = first.terminate()
    finally:
        first.kill()
    assert code == 0, first.text()
    assert took < 8 + 3
    sent = set(delivered_keys(upstream))
    # Every request that reached the upstream was answered and recorded as delivered: none
    # was cut off, so none will be sent again. Nothing is left leased.
    assert status_counts(db)["delivered"] == len(sent) < 200
    assert leased(db) == 0
    assert "stopping: no new claims" in first.text() and "stopped" in first.text()

    upstream.control(default={"status": 202})
    second = ForwardProcess(config, "second").start()
    try:
        wait_for(lambda: status_counts(db) == {"delivered": 200}, 30, "the rest delivered")
    finally:
        second.kill()
    assert delivered_keys(upstream) == Counter({k: 1 for k in keys})


def test_sigterm_cancels_requests_past_the_timeout_and_releases_their_leases(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    # Requests hang for 30 s; the forwarder's own timeout is longer (its lease too: 125 s), so
    # only the bounded shutdown can end them, and only released leases let a restart resend.
    upstream.control(default={"status": 202, "delay": 30})
    config = config_for(tmp_path, upstream, timeout=60)
    db = tmp_path / "relay.db"
    keys = [f"stuck-{i}" for i in range(50)]
    enqueue(db, keys)
    first = ForwardProcess(config, "first", shutdown_timeout=1).start()
    second = ForwardProcess(config, "second")
    try:
        # All CONCURRENCY requests in flight: the Space's loop now waits for one of them to
        # finish (the pace allows more), and the stop must end that wait too (the project's
        # CI once saw this forwarder sit out the 30 s after a SIGTERM that came then).
        wait_for(lambda: len(upstream.received()) >= CONCURRENCY, 20, "requests in flight")
        code, took = first.terminate()
        in_flight = {e["idempotency_key"] for e in events(upstream.received())}
        assert code == 0, first.text()
        assert 0.9 <= took < 1 + 5  # it waited for the requests, but not for their 30 s
        assert status_counts(db) == {"queued": 50}
        assert leased(db) == 0

        upstream.control(default={"status": 202})
        second.start()
        wait_for(lambda: status_counts(db) == {"delivered": 50}, 30, "everything after restart")
        got = delivered_keys(upstream)
    finally:
        first.kill()
        second.kill()
        assert upstream.proc is not None
        upstream.proc.kill()  # it still sits on the cut-off requests; no need to wait for them
    assert set(got) == set(keys)  # none lost
    twice = {k for k, n in got.items() if n > 1}
    assert twice <= in_flight and len(in_flight) <= CONCURRENCY  # only those cut off, again


def test_forward_with_a_bad_config_exits_2_naming_the_problems(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra="upstream_timeout_secs = 3", spaces=[
        Space(extra='upstream_url = "https://up.example/track"\nupstream_token_env = "NOPE_TOKEN"')
    ])
    result = CliRunner().invoke(main, ["forward", "--config", str(config)], env={"NOPE_TOKEN": ""})
    assert result.exit_code == 2
    assert "relay.upstream_timeout_secs" in result.stderr
    assert "NOPE_TOKEN" in result.stderr
    assert "Traceback" not in result.output


# pruning: in-process, with an injected clock

DAY = 86400.0
T0 = 1_800_000_000.0


class CountingOutbox(SQLiteOutbox):
    """A SQLite outbox that records each prune call's (delivered_before, now)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.prunes: list[tuple[float, float]] = []

    async def prune(self, delivered_before: float, now: float) -> int:
        deleted = await super().prune(delivered_before, now)
        self.prunes.append((delivered_before, now))
        return deleted


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` (plain or async) on the running loop until it holds, or fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if await value if inspect.isawaitable(value) else value:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_the_prune_loop_removes_delivered_events_older_than_the_retention(tmp_path: Path) -> None:
    settings = Settings(database=str(tmp_path / "relay.db"), delivered_retention_days=7,
                        spaces={"acme": SpaceSettings("acme")})  # no upstream: only the pruner
    box = CountingOutbox(settings.database)
    now = [T0]

    async def delivered_is(n: int) -> bool:
        return (await box.stats()).delivered == n

    async def scenario() -> None:
        await box.start()
        await box.enqueue([
            NewEvent("acme", "purchase", key, b"{}", (), T0 + DAY, T0)
            for key in ("old", "recent", "waiting")
        ], T0)
        old, recent = await box.claim("acme", 2, 30, T0)
        await box.delivered([old.id], T0)
        await box.delivered([recent.id], T0 + 3 * DAY)
        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(settings, box, Upstream(client), clock=lambda: now[0],
                                  prune_every=0.01)
            forwarder.start()
            try:
                now[0] = T0 + 6 * DAY  # both delivered events are younger than 7 days
                await until(lambda: any(at == T0 + 6 * DAY for _, at in box.prunes))
                assert await delivered_is(2)
                now[0] = T0 + 8 * DAY  # "old" is 8 days old now, "recent" 5
                await until(lambda: delivered_is(1))
            finally:
                await forwarder.stop(1)
        stats = await box.stats()
        assert (stats.delivered, stats.queued) == (1, 1)
        assert (T0 + DAY, T0 + 8 * DAY) in box.prunes  # cutoff: now minus the retention
        left = await box._read(lambda c: c.execute("SELECT idempotency_key FROM outbox").fetchall())
        assert sorted(left) == [("recent",), ("waiting",)]
        await box.close()

    asyncio.run(scenario())



def test_a_timer_that_fires_early_does_not_start_a_request_before_its_slot(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    # uvloop's timers count whole milliseconds from a loop time read at the start of a busy
    # turn, so a nap may end a little before the slot it waited for. Here every nap ends 4 ms
    # early on the injected clock; each request must still start in its slot, not before.
    space = SpaceSettings("acme", upstream_url=upstream.track_url, upstream_rate_per_minute=600)
    settings = Settings(database=str(tmp_path / "relay.db"), spaces={"acme": space})
    box = SQLiteOutbox(settings.database)
    now = [T0]
    starts: list[Any] = []

    async def early(seconds: float) -> None:
        if seconds >= 60:  # the pruner's wait: real, so it does not run the clock ahead
            await asyncio.sleep(seconds)
        now[0] += seconds - 0.004 if seconds > 0.004 else seconds
        await asyncio.sleep(0)

    async def scenario() -> None:
        await box.start()
        await box.enqueue([NewEvent("acme", "purchase", f"early-{i}", b"{}", (), T0 + DAY, T0)
                           for i in range(5)], T0)
        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(settings, box, Upstream(client), clock=lambda: now[0],
                                  sleep=early, on_settled=lambda *a: starts.append(a[-1]))
            forwarder.start()
            try:
                await until(lambda: len(starts) == 5)
            finally:
                await forwarder.stop(1)
        await box.close()

    asyncio.run(scenario())
    assert len({s.slot for s in starts}) == 5  # five slots, one interval apart
    assert all(s.at >= s.slot for s in starts), [(s.slot - T0, s.at - T0) for s in starts]
