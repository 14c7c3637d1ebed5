"""`comet-relay outbox` stats, dead, replay and tail, and the change feed `tail` follows.

CliRunner where only the command's output matters; real relay, upstream and `tail` processes
where the point is a running system. The contract tests of `ChangeFeed.changes` run on every
backend that implements it.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner, Result

from relay.cli import main
from relay.errors import Unavailable
from relay.store import Outbox, open_outbox
from relay.store.base import Change, ChangeFeed
from relay.store.sqlite import ACCEPTED_AFTER, STEPS_AFTER, SQLiteOutbox
from tests import test_forwarder
from tests.fake_upstream import events
from tests.support import ROOT, RelayProcess, UpstreamProcess, wait_for, write_config
from tests.test_forwarder import TOKEN_ENV, delivered_keys, post, relay_for
from tests.test_outbox import T0, event, run, run_with

HOUR = 3600.0
upstream = test_forwarder.upstream  # the fixture: a fake upstream process for each test


@pytest.fixture(params=["sqlite"])  # "redis" too once RedisOutbox is a ChangeFeed
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store, as a `database` setting, of each backend that implements ChangeFeed."""
    return str(tmp_path / "outbox.db")


def cli(*args: str) -> Result:
    """`comet-relay ARGS` in this process, with the upstream token the configs name."""
    return CliRunner().invoke(main, list(args), env=TOKEN_ENV)


def prepared(directory: Path) -> dict[str, int]:
    """A relay.toml and an outbox holding events in every state; returns their ids by key."""
    write_config(directory)

    async def fill(box: Outbox) -> dict[str, int]:
        await box.enqueue([event(k) for k in ("sent", "failing", "refused", "gone", "wait")], T0)
        await box.enqueue([event("b1", space="beta"), event("b2", space="beta")], T0)
        ids = {c.idempotency_key: c.id for c in await box.claim("acme", 4, 30, T0)}
        await box.delivered([ids["sent"]], T0 + 1)
        await box.retry(ids["failing"], T0 + 60, 503, "upstream busy", T0 + 2)
        await box.dead(ids["refused"], 422, "email domain\nis blocked", T0 + 3)
        await box.dead(ids["gone"], None, "gave up after 1 attempts: no answer", T0 + 4)
        return ids

    return run(str(directory / "relay.db"), fill)


# stats, dead, replay on a prepared outbox -----------------------------------------------------


def test_outbox_stats_json_has_retrying_and_per_space_figures(tmp_path: Path) -> None:
    prepared(tmp_path)
    result = cli("outbox", "stats", "--json", "--config", str(tmp_path / "relay.toml"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "queued": 4,
        "retrying": 1,
        "delivered": 1,
        "dead": 2,
        "spaces": {
            "acme": {"queued": 2, "retrying": 1, "delivered": 1, "dead": 2},
            "beta": {"queued": 2, "retrying": 0, "delivered": 0, "dead": 0},
        },
    }


def test_outbox_dead_lists_each_dead_event_as_json_and_as_a_table(tmp_path: Path) -> None:
    ids = prepared(tmp_path)
    config = str(tmp_path / "relay.toml")

    as_json = cli("outbox", "dead", "--json", "--config", config)
    as_table = cli("outbox", "dead", "--config", config)
    limited = cli("outbox", "dead", "--json", "--limit", "1", "--config", config)

    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.stdout)
    assert [{k: d[k] for k in d if k not in ("received_at", "died_at")} for d in listed] == [
        {"id": ids["refused"], "space": "acme", "event_name": "purchase",
         "idempotency_key": "refused", "attempts": 1, "last_status": 422,
         "last_message": "email domain\nis blocked"},
        {"id": ids["gone"], "space": "acme", "event_name": "purchase",
         "idempotency_key": "gone", "attempts": 1, "last_status": None,
         "last_message": "gave up after 1 attempts: no answer"},
    ]
    assert listed[0]["died_at"] == T0 + 3
    lines = as_table.stdout.splitlines()
    assert lines[0].split() == ["ID", "SPACE", "EVENT", "IDEMPOTENCY", "KEY", "ATTEMPTS",
                                "STATUS", "MESSAGE"]
    assert lines[1].split() == [str(ids["refused"]), "acme", "purchase", "refused", "1", "422",
                                "email", "domain", "is", "blocked"]
    assert lines[2].split()[3:6] == ["gone", "1", "-"]
    assert len(lines) == 3  # the message's newline does not break the table
    assert [d["idempotency_key"] for d in json.loads(limited.stdout)] == ["refused"]
    assert "the oldest 1 only; there are more" in limited.stderr
    assert "the oldest" not in cli("outbox", "dead", "--limit", "2", "--config", config).stderr


def test_outbox_replay_by_id_puts_back_only_dead_events(tmp_path: Path) -> None:
    ids = prepared(tmp_path)
    config = str(tmp_path / "relay.toml")

    result = cli("outbox", "replay", str(ids["refused"]), str(ids["sent"]), "--config", config)

    assert result.exit_code == 0, result.output
    assert result.stdout == "replayed 1 dead event(s)\n"
    assert "1 of the IDs given were not dead events" in result.stderr
    dead = json.loads(cli("outbox", "dead", "--json", "--config", config).stdout)
    assert [d["idempotency_key"] for d in dead] == ["gone"]
    stats = json.loads(cli("outbox", "stats", "--json", "--config", config).stdout)
    assert (stats["queued"], stats["dead"], stats["delivered"]) == (5, 1, 1)


@pytest.mark.parametrize("args", [[], ["--all", "3"]])
def test_outbox_replay_wants_all_or_ids_but_not_both(tmp_path: Path, args: list[str]) -> None:
    prepared(tmp_path)
    result = cli("outbox", "replay", *args, "--config", str(tmp_path / "relay.toml"))
    assert result.exit_code == 2
    assert "give either --all or the IDs of dead events, not both" in result.stderr
    assert json.loads(cli("outbox", "stats", "--json", "--config",
                          str(tmp_path / "relay.toml")).stdout)["dead"] == 2


def test_outbox_commands_do_not_create_a_missing_outbox(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    dead = cli("outbox", "dead", "--json", "--config", config)
    replay = cli("outbox", "replay", "--all", "--config", config)
    tail = cli("outbox", "tail", "--config", config)

    assert dead.exit_code == 0 and json.loads(dead.stdout) == []
    assert "no outbox at" in dead.stderr
    assert replay.exit_code == 1 and "no outbox at" in replay.stderr
    assert tail.exit_code == 1 and "no outbox at" in tail.stderr
    assert not (tmp_path / "relay.db").exists()


# end to end: a real relay, a real upstream -----------------------------------------------------


def test_a_refused_event_is_listed_dead_then_replayed_and_delivered(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(script=[{"status": 422, "message": "email domain is blocked"}])
    config = str(relay_for(tmp_path, upstream))

    def dead() -> list[dict[str, object]]:
        result = cli("outbox", "dead", "--json", "--config", config)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with RelayProcess(Path(config), env=TOKEN_ENV) as relay:
        [key] = post(relay, 1, "refused")
        [listed] = wait_for(dead, 15, "the refused event in the dead letters")
        assert (listed["idempotency_key"], listed["space"], listed["event_name"]) == (
            key, "acme", "purchase")
        assert (listed["last_status"], listed["attempts"]) == (422, 1)
        assert listed["last_message"] == "email domain is blocked"
        assert delivered_keys(upstream) == Counter()

        replay = cli("outbox", "replay", "--all", "--config", config)
        assert replay.exit_code == 0, replay.output
        assert replay.stdout == "replayed 1 dead event(s)\n"
        wait_for(lambda: delivered_keys(upstream) == Counter({key: 1}), 15, "the replayed event")

        def settled() -> dict[str, object] | None:
            stats = json.loads(cli("outbox", "stats", "--json", "--config", config).stdout)
            return stats if stats["delivered"] == 1 else None

        stats = wait_for(settled, 10, "the delivery recorded")
    assert (stats["dead"], stats["queued"]) == (0, 0)
    assert stats["spaces"] == {"acme": {"queued": 0, "retrying": 0, "delivered": 1, "dead": 0}}
    assert dead() == []
    assert [r["status"] for r in upstream.received()] == [422, 202]


def delivered_count(config: Path) -> int:
    result = cli("outbox", "stats", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    return int(json.loads(result.stdout)["delivered"])


class Lines:
    """The stdout of a child process, line by line, read by a thread so waits have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def until(self, done: Callable[[list[str]], bool], timeout: float) -> list[str]:
        """Read lines until `done(lines)` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"tail printed only {self.lines}")
            try:
                self.lines.append(self._queue.get(timeout=left).rstrip("\n"))
            except queue.Empty:
                pass
        return self.lines


def test_outbox_tail_follows_an_event_from_accepted_through_a_retry_to_delivered(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    config = relay_for(tmp_path, upstream)
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        [before] = post(relay, 1, "before")  # delivered before the tail starts: not shown
        wait_for(lambda: delivered_count(config) == 1, 15, "the first delivery recorded")
        upstream.control(script=[{"status": 500, "message": "try again"}])
        stderr = tmp_path / "tail.err"
        with open(stderr, "w") as err:
            tail = subprocess.Popen(
                [sys.executable, "-m", "relay.cli", "outbox", "tail", "--interval", "0.05"],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                env={**TOKEN_ENV, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                     "RELAY_CONFIG": str(config)},
            )
        try:
            wait_for(lambda: "following" in stderr.read_text(), 20, "tail to start")
            [key] = post(relay, 1, "tailed")
            lines = Lines(tail).until(
                lambda seen: any(key in line and "delivered" in line for line in seen), 20
            )
        finally:
            tail.terminate()
            tail.wait(10)
    mine = [line for line in lines if key in line]
    assert [line.split()[4:] for line in mine] == [
        ["accepted"],
        ["retrying", "attempts=1", "last=500", "try", "again"],
        ["delivered", "attempts=2"],
    ]
    assert all(line.split()[1:3] == ["acme", "purchase"] for line in mine)
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in mine)
    assert not any(before in line for line in lines)
    assert [e["idempotency_key"] for e in events(upstream.received())] == [before, key, key]


# the change feed: ChangeFeed.changes ------------------------------------------------------------


def as_feed(box: Outbox) -> ChangeFeed:
    assert isinstance(box, ChangeFeed), f"{type(box).__name__} is not a ChangeFeed"
    return box


def steps(changes: Sequence[Change]) -> list[tuple[object, ...]]:
    return [(c.idempotency_key, c.state, c.at, c.attempts, c.last_status, c.last_message)
            for c in changes]


def test_changes_start_at_the_present_and_report_each_step_once(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        feed = as_feed(box)
        await box.enqueue([event("before")], T0)
        start = await feed.changes(None)
        assert start.changes == []
        assert (await feed.changes(start.cursor)).changes == []

        await box.enqueue([event("a"), event("b", name="lead_generated")], T0 + 1)
        accepted = await feed.changes(start.cursor)
        assert steps(accepted.changes) == [("a", "accepted", T0, 0, None, ""),
                                           ("b", "accepted", T0, 0, None, "")]
        assert (accepted.changes[1].space, accepted.changes[1].event_name) == (
            "acme", "lead_generated")

        claimed = {c.idempotency_key: c.id for c in await box.claim("acme", 10, 30, T0 + 2)}
        await box.retry(claimed["a"], T0 + 5, 503, "busy", T0 + 3)
        await box.delivered([claimed["b"]], T0 + 4)
        await box.delivered([claimed["before"]], T0 + 4.5)
        (a,) = await box.claim("acme", 10, 30, T0 + 5)
        await box.release([a.id])  # neither a claim nor a release is a step
        (a,) = await box.claim("acme", 10, 30, T0 + 5)
        await box.dead(a.id, 422, "bad email", T0 + 6)
        assert await box.replay(None, T0 + 7) == 1

        later = await feed.changes(accepted.cursor)
        assert steps(later.changes) == [
            ("a", "retrying", T0 + 3, 1, 503, "busy"),
            ("b", "delivered", T0 + 4, 1, None, ""),
            ("before", "delivered", T0 + 4.5, 1, None, ""),
            ("a", "dead", T0 + 6, 2, 422, "bad email"),
            ("a", "replayed", T0 + 7, 2, 422, "bad email"),
        ]
        assert (await feed.changes(later.cursor)).changes == []

    run(database, scenario)


def test_changes_in_small_pages_put_each_acceptance_before_its_steps(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        feed = as_feed(box)
        cursor = (await feed.changes(None)).cursor
        await box.enqueue([event(f"k{i}") for i in range(5)], T0)
        claimed = await box.claim("acme", 5, 30, T0)
        for c in reversed(claimed):  # the newest event is delivered first
            await box.delivered([c.id], T0 + 1)
        seen: list[tuple[str, str]] = []
        for _ in range(20):
            page = await feed.changes(cursor, limit=2)
            assert len(page.changes) <= 4
            seen += [(c.idempotency_key, c.state) for c in page.changes]
            cursor = page.cursor
            if not page.changes:
                break
        assert sorted(seen) == sorted((f"k{i}", s) for i in range(5)
                                      for s in ("accepted", "delivered"))
        for i in range(5):
            assert seen.index((f"k{i}", "accepted")) < seen.index((f"k{i}", "delivered"))

    run(database, scenario)


def test_changes_include_other_writers_and_skip_pruned_events(database: str) -> None:
    other = open_outbox(database)  # another process's outbox on the same store

    async def scenario(box: Outbox) -> None:
        feed = as_feed(box)
        await other.start()
        try:
            cursor = (await feed.changes(None)).cursor
            await other.enqueue([event("x"), event("y")], T0)
            x, y = await other.claim("acme", 2, 30, T0)
            await other.delivered([x.id], T0 + 1)
            await other.delivered([y.id], T0 + 2)
            assert await box.prune(delivered_before=T0 + 1.5, now=T0 + 2) == 1
            page = await feed.changes(cursor)
            assert [(c.idempotency_key, c.state) for c in page.changes] == [
                ("y", "accepted"), ("y", "delivered")]
            assert (await feed.changes(page.cursor)).changes == []
        finally:
            await other.close()

    run(database, scenario)


def test_sqlite_changes_read_primary_keys_and_enqueue_logs_no_step(tmp_path: Path) -> None:
    async def count_steps(box: SQLiteOutbox) -> int:
        (n,) = await box._read(lambda c: c.execute("SELECT count(*) FROM outbox_steps").fetchone())
        return int(n)

    async def fill(box: SQLiteOutbox) -> tuple[int, int]:
        await box.enqueue([event(f"e{i}") for i in range(300)], T0)
        after_enqueue = await count_steps(box)
        claimed = await box.claim("acme", 300, 30, T0)
        await box.delivered([c.id for c in claimed], T0)
        return after_enqueue, await count_steps(box)

    path = tmp_path / "outbox.db"
    assert run_with(SQLiteOutbox(str(path)), fill) == (0, 300)  # enqueues log no step
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")
        plans = [[row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (0, 10))]
                 for sql in (ACCEPTED_AFTER, STEPS_AFTER)]
    finally:
        conn.close()
    assert plans == [
        ["SEARCH outbox USING INTEGER PRIMARY KEY (rowid>?)"],
        ["SEARCH s USING INTEGER PRIMARY KEY (rowid>?)",
         "SEARCH o USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN"],
    ]


def test_sqlite_prune_drops_steps_older_than_an_hour(tmp_path: Path) -> None:
    async def scenario(box: SQLiteOutbox) -> list[str]:
        cursor = (await box.changes(None)).cursor
        await box.enqueue([event("early"), event("late")], T0)
        early, late = await box.claim("acme", 2, 30, T0)
        await box.retry(early.id, T0 + 10, 500, "", T0)
        await box.retry(late.id, T0 + 10, 500, "", T0 + HOUR)
        await box.prune(delivered_before=T0, now=T0 + HOUR + 1)
        page = await box.changes(cursor)
        return [f"{c.idempotency_key} {c.state}" for c in page.changes]

    assert run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario) == [
        "early accepted", "late accepted", "late retrying"]


def test_sqlite_refuses_a_file_of_an_older_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    async def start() -> None:
        await SQLiteOutbox(str(path)).start()

    with pytest.raises(Unavailable, match="made by a development version"):
        asyncio.run(start())


def test_outbox_commands_need_no_upstream_token_or_secret_key(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        '[relay]\ndatabase = "relay.db"\n\n[spaces.acme]\n'
        'upstream_url = "https://up.example/track"\nupstream_token_env = "UNSET_TOKEN_VAR"\n'
    )
    runner = CliRunner()
    env = {"UNSET_TOKEN_VAR": "", "RELAY_SECRET_KEYS": ""}
    for args in (["outbox", "stats", "--json"], ["outbox", "dead", "--json"]):
        result = runner.invoke(main, [*args, "--config", str(config)], env=env)
        assert result.exit_code == 0, result.output
    refused = runner.invoke(main, ["check", "--config", str(config)], env=env)
    assert refused.exit_code == 2
    assert "UNSET_TOKEN_VAR is not set" in refused.output
