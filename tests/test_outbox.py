"""Contract tests of the Outbox, run against every backend; SQLite-only checks at the end.

A backend is named by its `database` string, exactly as in relay.toml, and opened through
`open_outbox`; to add one, add a param to the `database` fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from relay.errors import Unavailable
from relay.rules.events import PRIORITY_API_CONVERSION, PRIORITY_PAGE_VIEW
from relay.store import Outbox, open_outbox
from relay.store.base import Enqueued, NewEvent
from relay.store.sqlite import CLAIM, SQLiteOutbox

T = TypeVar("T")
B = TypeVar("B", bound=Outbox)
T0 = 1_800_000_000.0
HOUR = 3600.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "redis"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store for one test, as a `database` setting."""
    if request.param == "sqlite":
        return str(tmp_path / "outbox.db")
    if request.param == "redis":  # the session's redis-server (tests/conftest.py), emptied
        return str(request.getfixturevalue("redis_url"))
    raise ValueError(f"unknown backend {request.param}")


def run_with(box: B, scenario: Callable[[B], Awaitable[T]]) -> T:
    """Start `box`, run `scenario` with it in a new event loop, close it."""

    async def main() -> T:
        await box.start()
        try:
            return await scenario(box)
        finally:
            await box.close()

    return asyncio.run(main())


def run(database: str, scenario: Callable[[Outbox], Awaitable[T]]) -> T:
    """Run `scenario` with an outbox opened on `database`, as the relay opens it."""
    return run_with(open_outbox(database), scenario)


def event(
    key: str,
    *,
    space: str = "acme",
    name: str = "purchase",
    dedup: tuple[str, ...] | None = None,
    until: float = T0 + 48 * HOUR,
    priority: int = PRIORITY_API_CONVERSION,
) -> NewEvent:
    """An event whose only dedup key is its idempotency key unless `dedup` says otherwise."""
    return NewEvent(
        space=space,
        event_name=name,
        idempotency_key=key,
        payload=json.dumps({"event_name": name, "idempotency_key": key}).encode(),
        dedup_keys=(f"idem:{name}:{key}",) if dedup is None else dedup,
        dedup_until=until,
        received_at=T0,
        priority=priority,
    )


def page_view(key: str) -> NewEvent:
    return event(key, name="view_content", priority=PRIORITY_PAGE_VIEW)


def queued(results: list[Enqueued]) -> list[bool]:
    """Per event: queued as a new event (True), or not (a duplicate, or merged)."""
    return [r.queued for r in results]


async def claim_keys(box: Outbox, n: int = 100, now: float = T0, space: str = "acme") -> list[str]:
    return [c.idempotency_key for c in await box.claim(space, n, 30, now)]


# enqueue and dedup


def test_enqueue_dedups_a_key_repeated_in_one_call(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert queued(await box.enqueue([event("a"), event("a"), event("b")], T0)) == [True, False, True]
        assert await claim_keys(box) == ["a", "b"]

    run(database, scenario)


def test_enqueue_dedups_across_calls_but_not_across_spaces(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert queued(await box.enqueue([event("a")], T0)) == [True]
        assert queued(await box.enqueue([event("a")], T0 + 1)) == [False]
        assert queued(await box.enqueue([event("a", space="other")], T0 + 2)) == [True]
        stats = await box.stats()
        assert stats.queued == 2
        assert stats.spaces["acme"]["queued"] == 1
        assert stats.spaces["other"]["queued"] == 1

    run(database, scenario)


def test_an_expired_key_does_not_dedup_and_is_renewed(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert queued(await box.enqueue([event("a", until=T0 + 10)], T0)) == [True]
        assert queued(await box.enqueue([event("a", until=T0 + 20)], T0 + 9)) == [False]
        assert queued(await box.enqueue([event("a", until=T0 + 20)], T0 + 10)) == [True]
        assert queued(await box.enqueue([event("a", until=T0 + 30)], T0 + 19)) == [False]

    run(database, scenario)


def test_any_shared_key_dedups_such_as_an_order_id(database: str) -> None:
    order = "order:purchase:1001"

    async def scenario(box: Outbox) -> None:
        first = event("a", dedup=("idem:a", order))
        second = event("b", dedup=("idem:b", order))
        other_order = event("c", dedup=("idem:c", "order:purchase:1002"))
        assert queued(await box.enqueue([first, second, other_order], T0)) == [True, False, True]
        # The duplicate's own keys were not stored: "b" alone is new.
        assert queued(await box.enqueue([event("b")], T0)) == [True]

    run(database, scenario)


def test_events_without_dedup_keys_are_always_queued(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert queued(await box.enqueue([event("a", dedup=()), event("a", dedup=())], T0)) == [True, True]

    run(database, scenario)


def test_concurrent_enqueues_of_one_key_queue_it_once(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        results = await asyncio.gather(*(box.enqueue([event("a")], T0) for _ in range(50)))
        assert sorted(r.queued for (r,) in results) == [False] * 49 + [True]
        assert (await box.stats()).queued == 1

    run(database, scenario)


# claim, lease, release


def test_claim_takes_conversions_before_older_page_views(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([page_view(f"pv{i}") for i in range(5)], T0)
        await box.enqueue([event("purchase-1")], T0 + 1)
        await box.enqueue([page_view("pv5"), event("purchase-2")], T0 + 2)
        assert await claim_keys(box, 3, T0 + 3) == ["purchase-1", "purchase-2", "pv0"]
        assert await claim_keys(box, 10, T0 + 3) == ["pv1", "pv2", "pv3", "pv4", "pv5"]

    run(database, scenario)


def test_claim_returns_the_event_and_only_of_its_space(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a"), event("b", space="other")], T0)
        (claimed,) = await box.claim("acme", 10, 30, T0 + 5)
        assert claimed.space == "acme"
        assert claimed.event_name == "purchase"
        assert claimed.idempotency_key == "a"
        assert json.loads(claimed.payload) == {"event_name": "purchase", "idempotency_key": "a"}
        assert claimed.attempts == 0
        assert claimed.received_at == T0
        assert claimed.lease_until == T0 + 35
        assert await box.claim("nobody", 10, 30, T0 + 5) == []
        assert await box.claim("acme", 0, 30, T0 + 5) == []

    run(database, scenario)


def test_a_lease_hides_an_event_until_it_runs_out(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a")], T0)
        assert await claim_keys(box, now=T0) == ["a"]  # lease of 30 s
        assert await claim_keys(box, now=T0 + 29.9) == []
        assert await box.next_due("acme") == T0 + 30
        # The holder died: the event is claimed again (at-least-once), no attempt counted.
        (again,) = await box.claim("acme", 10, 30, T0 + 30)
        assert (again.idempotency_key, again.attempts) == ("a", 0)

    run(database, scenario)


def test_release_makes_claimed_events_due_at_once(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a"), event("b")], T0)
        claimed = await box.claim("acme", 10, 300, T0)
        await box.release([c.id for c in claimed])
        again = await box.claim("acme", 10, 300, T0 + 1)
        assert [(c.idempotency_key, c.attempts) for c in again] == [("a", 0), ("b", 0)]

    run(database, scenario)


def test_two_outboxes_on_one_store_never_claim_one_event_twice(database: str) -> None:
    async def scenario(first: Outbox) -> None:
        await first.enqueue([event(f"e{i}") for i in range(300)], T0)
        second = open_outbox(database)
        await second.start()
        try:
            claims = await asyncio.gather(
                *(box.claim("acme", 7, 60, T0) for _ in range(30) for box in (first, second))
            )
        finally:
            await second.close()
        keys = [c.idempotency_key for batch in claims for c in batch]
        assert len(keys) == len(set(keys)) == 300

    run(database, scenario)


# delivered, retry, dead, replay


def test_delivered_events_are_not_claimed_again(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a"), event("b")], T0)
        claimed = await box.claim("acme", 10, 30, T0)
        await box.delivered([claimed[0].id], T0 + 1)
        assert await claim_keys(box, now=T0 + 60) == ["b"]
        stats = await box.stats()
        assert (stats.queued, stats.delivered) == (1, 1)

    run(database, scenario)


def test_retry_counts_an_attempt_and_waits_until_its_time(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a"), event("b")], T0)
        a, b = await box.claim("acme", 10, 30, T0)
        await box.retry(a.id, T0 + 60, 503, "busy", T0 + 1)
        await box.delivered([b.id], T0 + 1)
        assert await box.next_due("acme") == T0 + 60
        assert await claim_keys(box, now=T0 + 59) == []
        (again,) = await box.claim("acme", 10, 30, T0 + 60)
        assert (again.id, again.attempts) == (a.id, 1)
        await box.retry(a.id, T0 + 120, None, "timeout", T0 + 61)
        stats = await box.stats()
        assert (stats.queued, stats.retrying, stats.delivered) == (1, 1, 1)
        (third,) = await box.claim("acme", 10, 30, T0 + 120)
        assert third.attempts == 2

    run(database, scenario)


def test_dead_events_are_listed_and_can_be_replayed(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event("a"), event("b"), event("c")], T0)
        a, b, c = await box.claim("acme", 10, 30, T0)
        await box.retry(a.id, T0 + 5, 500, "oops", T0 + 1)
        (a,) = await box.claim("acme", 10, 30, T0 + 5)
        await box.dead(a.id, 422, "email is invalid", T0 + 6)
        await box.dead(b.id, None, "too old", T0 + 7)

        dead = await box.dead_letters()
        assert [(d.id, d.idempotency_key, d.attempts) for d in dead] == [
            (a.id, "a", 2),
            (b.id, "b", 1),
        ]
        assert (dead[0].space, dead[0].event_name) == ("acme", "purchase")
        assert (dead[0].last_status, dead[0].last_message) == (422, "email is invalid")
        assert (dead[1].last_status, dead[1].last_message) == (None, "too old")
        assert (dead[0].received_at, dead[0].died_at) == (T0, T0 + 6)
        assert len(await box.dead_letters(limit=1)) == 1
        await box.delivered([c.id], T0 + 8)
        assert await claim_keys(box, now=T0 + 100) == []
        stats = await box.stats()
        assert (stats.queued, stats.delivered, stats.dead) == (0, 1, 2)

        assert await box.replay([a.id, c.id, 999_999], T0 + 200) == 1  # only dead ones count
        (replayed,) = await box.claim("acme", 10, 30, T0 + 200)
        assert (replayed.id, replayed.attempts) == (a.id, 2)
        assert [d.id for d in await box.dead_letters()] == [b.id]
        assert await box.replay(None, T0 + 300) == 1
        assert await box.dead_letters() == []
        assert (await box.stats()).dead == 0

    run(database, scenario)


# prune, next_due, stats


def test_prune_deletes_old_delivered_events_in_chunks(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([event(f"old{i}", until=T0 + 10) for i in range(2500)], T0)
        await box.enqueue([event("new"), event("waiting")], T0)
        old = await box.claim("acme", 2500, 30, T0)
        await box.delivered([c.id for c in old], T0 + 1)
        (new,) = await box.claim("acme", 1, 30, T0)
        await box.delivered([new.id], T0 + 100)

        assert await box.prune(delivered_before=T0 + 50, now=T0 + 200) == 2500
        stats = await box.stats()
        assert (stats.queued, stats.delivered) == (1, 1)
        assert await box.prune(delivered_before=T0 + 50, now=T0 + 200) == 0
        # Their dedup keys had expired; the keys of "new" have not.
        assert queued(await box.enqueue([event("old0"), event("new")], T0 + 200)) == [True, False]

    run(database, scenario)


def test_next_due_is_none_without_queued_events_and_sees_leases(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert await box.next_due("acme") is None
        await box.enqueue([event("a")], T0)
        await box.enqueue([event("b")], T0 + 5)
        assert await box.next_due("acme") == T0
        a, b = await box.claim("acme", 2, 30, T0 + 5)
        assert await box.next_due("acme") == T0 + 35
        await box.retry(a.id, T0 + 20, 500, "", T0 + 6)
        assert await box.next_due("acme") == T0 + 20
        await box.delivered([a.id, b.id], T0 + 7)
        assert await box.next_due("acme") is None
        assert await box.next_due("other") is None

    run(database, scenario)


def test_stats_count_every_state_per_space(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert (await box.stats()).as_dict() == {
            "queued": 0,
            "retrying": 0,
            "delivered": 0,
            "dead": 0,
            "spaces": {},
        }
        await box.enqueue([event(f"a{i}") for i in range(6)], T0)
        await box.enqueue([event(f"b{i}", space="beta") for i in range(3)], T0)
        a = await box.claim("acme", 4, 30, T0)
        await box.delivered([a[0].id, a[1].id], T0)
        await box.retry(a[2].id, T0 + 10, 500, "", T0)
        await box.dead(a[3].id, 422, "bad", T0)
        (b,) = await box.claim("beta", 1, 30, T0)
        await box.retry(b.id, T0 + 10, 500, "", T0)

        stats = await box.stats()
        assert (stats.queued, stats.retrying, stats.delivered, stats.dead) == (6, 2, 2, 1)
        assert stats.spaces == {
            "acme": {"queued": 3, "retrying": 1, "delivered": 2, "dead": 1},
            "beta": {"queued": 3, "retrying": 1, "delivered": 0, "dead": 0},
        }

    run(database, scenario)


# durability


def test_enqueued_events_survive_close_and_reopen(database: str) -> None:
    async def enqueue(box: Outbox) -> None:
        await box.enqueue([event("a"), page_view("b")], T0)

    async def look(box: Outbox) -> list[str]:
        return await claim_keys(box)

    run(database, enqueue)
    assert run(database, look) == ["a", "b"]


CHILD = """
import asyncio, sys
from relay.store import open_outbox
from relay.store.base import NewEvent

async def main(database: str) -> None:
    box = open_outbox(database)
    await box.start()

    async def one(i: int) -> None:
        key = f"k{i}"
        ev = NewEvent("acme", "purchase", key, b"{}", ("idem:purchase:" + key,), 1e12, 0.0)
        if (await box.enqueue([ev], 0.0))[0].queued:
            print(key, flush=True)

    for start in range(0, 200_000, 16):  # bounded: the parent kills it long before
        await asyncio.gather(*(one(i) for i in range(start, start + 16)))

asyncio.run(main(sys.argv[1]))
"""


def test_sigkill_loses_no_acknowledged_enqueue(database: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, database], stdout=subprocess.PIPE, text=True, env=env
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < 500 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
        child.send_signal(signal.SIGKILL)
        acked.extend(line.strip() for line in child.stdout)  # acked before the kill landed
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert len(acked) >= 500

    async def stored(box: Outbox) -> set[str]:
        return {c.idempotency_key for c in await box.claim("acme", 1_000_000, 30, 0.0)}

    missing = set(acked) - run(database, stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


# SQLite only: group commit and query plans


def test_sqlite_group_commit_shares_commits_between_concurrent_enqueues(tmp_path: Path) -> None:
    async def scenario(box: SQLiteOutbox) -> int:
        before = box.commits
        results = await asyncio.gather(*(box.enqueue([event(f"e{i}")], T0) for i in range(200)))
        assert [queued(r) for r in results] == [[True]] * 200
        return box.commits - before

    commits = run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario)
    assert 1 <= commits <= 20, f"{commits} commits for 200 concurrent enqueues"


def test_sqlite_settings_are_wal_and_synchronous_normal_with_the_writers_own_sync(
    tmp_path: Path,
) -> None:
    """NORMAL: the commit does not wait for the disk; the outbox's sync thread fsyncs the WAL
    before answering (tests/test_outbox_sync.py). Statement journals stay in memory
    (temp_store MEMORY, 2): in a temporary file they were a dozen writes per delivered event."""

    def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        return mode, sync, conn.execute("PRAGMA temp_store").fetchone()[0]

    async def scenario(box: SQLiteOutbox) -> tuple[str, int, int]:
        return await box._write(pragmas)

    assert run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario) == ("wal", 1, 2)


async def in_one_group(
    box: SQLiteOutbox, *jobs: Awaitable[T], submitted: int | None = None
) -> list[asyncio.Future[T]]:
    """Run `jobs` as one group: submit them all while the writer thread is held, then let go.

    `submitted` is how many writer jobs they make (enqueues of one tick share a job).
    """
    entered, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        gate.wait(10)

    held = asyncio.ensure_future(box._write(hold))
    assert await asyncio.to_thread(entered.wait, 10)
    tasks: list[asyncio.Future[T]] = [asyncio.ensure_future(job) for job in jobs]
    deadline = time.monotonic() + 10
    expected = len(tasks) if submitted is None else submitted
    while box._writer is not None and box._writer._jobs.qsize() < expected:
        assert time.monotonic() < deadline, "the jobs were never submitted"
        await asyncio.sleep(0)  # let each task run to its submit
    gate.set()
    await held
    await asyncio.wait(tasks)
    return tasks


def test_sqlite_a_failing_job_does_not_undo_the_rest_of_its_group(tmp_path: Path) -> None:
    async def scenario(box: SQLiteOutbox) -> None:
        commits = box.commits
        good, bad, also_good = await in_one_group(
            box,
            box.enqueue([event("a")], T0),
            box._write(lambda conn: conn.execute("INSERT INTO nope") and [False]),
            box.enqueue([event("b")], T0),
            submitted=2,  # the two enqueues of one tick share a job
        )
        assert queued(good.result()) == queued(also_good.result()) == [True]
        assert isinstance(bad.exception(), Unavailable)
        assert box.commits == commits + 2  # the holding job's group, then one for the rest
        assert await claim_keys(box) == ["a", "b"]

    run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario)


def test_sqlite_a_lost_transaction_fails_every_job_of_its_group(tmp_path: Path) -> None:
    def rogue(conn: sqlite3.Connection) -> list[bool]:
        conn.execute("ROLLBACK")  # ends the group's transaction, as an I/O error would
        raise sqlite3.OperationalError("disk I/O error")

    async def scenario(box: SQLiteOutbox) -> None:
        lost, failing = await in_one_group(box, box.enqueue([event("a")], T0), box._write(rogue))
        assert isinstance(lost.exception(), Unavailable)
        assert isinstance(failing.exception(), Unavailable)
        assert await claim_keys(box) == []
        assert queued(await box.enqueue([event("a")], T0)) == [True]  # the writer carries on

    run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario)


def test_sqlite_claim_reads_its_index_without_sorting_or_scanning(tmp_path: Path) -> None:
    async def fill(box: SQLiteOutbox) -> None:
        await box.enqueue([page_view(f"p{i}") for i in range(200)], T0)
        await box.enqueue([event(f"e{i}", space="other") for i in range(200)], T0)
        await box.claim("acme", 50, 30, T0)

    path = tmp_path / "outbox.db"
    run_with(SQLiteOutbox(str(path)), fill)
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM, ("a", 1, 1, 10))]
    finally:
        conn.close()
    assert plan == ["SEARCH outbox USING INDEX outbox_claim (space=?)"]


def test_sqlite_closed_outbox_refuses_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        box = SQLiteOutbox(str(tmp_path / "outbox.db"))
        with pytest.raises(Unavailable):
            await box.enqueue([event("a")], T0)
        await box.start()
        await box.close()
        await box.close()  # twice is fine
        with pytest.raises(Unavailable):
            await box.enqueue([event("a")], T0)
        with pytest.raises(Unavailable):
            await box.stats()

    asyncio.run(scenario())


def test_sqlite_one_outbox_serves_successive_event_loops(tmp_path: Path) -> None:
    box = SQLiteOutbox(str(tmp_path / "outbox.db"))  # as the CLI uses it: asyncio.run per step
    asyncio.run(box.start())
    assert queued(asyncio.run(box.enqueue([event("a")], T0))) == [True]
    assert asyncio.run(box.stats()).queued == 1
    asyncio.run(box.close())
    assert box.commits >= 1


def test_sqlite_prune_drops_expired_keys_and_counts_match_the_rows(tmp_path: Path) -> None:
    async def scenario(box: SQLiteOutbox) -> None:
        await box.enqueue([event(f"a{i}", until=T0 + 10) for i in range(1500)], T0)
        await box.enqueue([event(f"b{i}", space="beta") for i in range(10)], T0)
        claimed = await box.claim("acme", 1200, 30, T0)
        await box.delivered([c.id for c in claimed[:1000]], T0)
        for c in claimed[1000:1100]:
            await box.retry(c.id, T0 + 5, 500, "", T0)
        await box.dead(claimed[1100].id, 422, "bad", T0)
        await box.prune(delivered_before=T0 - 1, now=T0 + 20)  # no event is old enough

        stats = await box.stats()
        recount = await box._read(
            lambda conn: conn.execute(
                "SELECT space, status, count(*), sum(status = 'queued' AND attempts > 0)"
                " FROM outbox GROUP BY space, status"
            ).fetchall()
        )
        for space, status, n, retrying in recount:
            assert stats.spaces[space][status] == n
            if status == "queued":
                assert stats.spaces[space]["retrying"] == retrying
        assert stats.retrying == 100
        keys = await box._read(lambda conn: conn.execute("SELECT count(*) FROM dedup").fetchone())
        assert keys == (10,)  # the 1500 keys of "acme" had expired

    run_with(SQLiteOutbox(str(tmp_path / "outbox.db")), scenario)
