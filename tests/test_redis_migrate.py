"""Moving a SQLite outbox into Redis loses nothing and duplicates nothing, even when re-run."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import relay.store.migrate
from relay.errors import MigrationError
from relay.store.base import QUEUED, Claimed, DeadEvent, Enqueued, Outbox, Outcome
from relay.store.migrate import migrate
from relay.store.redis import RedisOutbox
from relay.store.sqlite import SQLiteOutbox
from tests.test_outbox import HOUR, T0, event, page_view, run_with
from tests.test_outbox_twins import API, BROWSER, HOLD, ev

LATER = T0 + 1000


def fill(path: Path) -> None:
    """A SQLite outbox with every kind of event: queued, retrying, delivered, dead, two Spaces."""

    async def scenario(box: SQLiteOutbox) -> None:
        await box.enqueue([page_view(f"pv{i}") for i in range(30)], T0)
        await box.enqueue([event(f"c{i}") for i in range(40)], T0 + 1)
        await box.enqueue([event(f"b{i}", space="beta") for i in range(25)], T0 + 2)
        await box.enqueue([event("short", until=T0 + 5)], T0 + 2)
        claimed = await box.claim("acme", 20, 30, T0 + 3)
        await box.delivered([c.id for c in claimed[:5]], T0 + 4)
        for c in claimed[5:10]:
            await box.retry(c.id, T0 + 500, 503, "busy", T0 + 4)
        for c in claimed[10:13]:
            await box.dead(c.id, 422, f"bad {c.idempotency_key}", T0 + 5)
        await box.release([c.id for c in claimed[13:]])
        (b,) = await box.claim("beta", 1, 30, T0 + 3)
        await box.dead(b.id, None, "too old", T0 + 6)

    run_with(SQLiteOutbox(str(path)), scenario)


def drain(box: Outbox) -> tuple[list[Claimed], list[Claimed], list[DeadEvent], dict[str, object]]:
    """Everything a store would hand out after the move: claims, dead letters, stats."""

    async def scenario(
        box: Outbox,
    ) -> tuple[list[Claimed], list[Claimed], list[DeadEvent], dict[str, object]]:
        stats = (await box.stats()).as_dict()
        dead = await box.dead_letters()
        acme = await box.claim("acme", 1000, 30, LATER)
        beta = await box.claim("beta", 1000, 30, LATER)
        return acme, beta, dead, stats

    return run_with(box, scenario)


def same_claims(a: list[Claimed], b: list[Claimed]) -> None:
    def view(c: Claimed) -> tuple[object, ...]:
        return (c.space, c.event_name, c.idempotency_key, c.payload, c.attempts, c.received_at)

    assert [view(c) for c in a] == [view(c) for c in b]


def dead_view(d: DeadEvent) -> tuple[object, ...]:
    return (d.space, d.idempotency_key, d.attempts, d.last_status, d.last_message,
            d.received_at, d.died_at)  # fmt: skip


def as_schema_2(path: Path) -> None:
    """Turn the outbox file into what a relay from before trust tiers wrote (schema 2; the
    inverse of relay/store/sqlite/upgrade_2_to_3.sql): no source, twin or key's event, page
    views at priority 1, idempotency keys without the event name."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("""
            BEGIN;
            UPDATE outbox SET priority = 1 WHERE priority = 2;
            UPDATE dedup SET key = 'idem:' || (SELECT idempotency_key FROM outbox
                                                WHERE outbox.id = dedup.event_id)
                WHERE key LIKE 'idem:%';
            ALTER TABLE outbox DROP COLUMN source;
            ALTER TABLE outbox DROP COLUMN twin;
            ALTER TABLE dedup DROP COLUMN event_id;
            ALTER TABLE dedup DROP COLUMN source;
            PRAGMA user_version = 2;
            COMMIT;
        """)
    finally:
        conn.close()


@pytest.mark.parametrize("schema", [3, 2])
def test_migrate_moves_queued_and_dead_events_in_order_with_their_history(
    tmp_path: Path, redis_url: str, schema: int
) -> None:
    path = tmp_path / "outbox.db"
    fill(path)
    if schema == 2:  # migrate upgrades it first, as the relay does at start
        as_schema_2(path)
    shutil.copy(path, tmp_path / "copy.db")
    expected = drain(SQLiteOutbox(str(tmp_path / "copy.db")))

    report = asyncio.run(migrate(str(path), redis_url, LATER - 100))
    assert (report.queued, report.dead, report.skipped) == (87, 4, 0)
    assert report.dedup_keys == 95  # every key but the one that expired at T0 + 5

    acme, beta, dead, stats = drain(RedisOutbox(redis_url))
    same_claims(acme, expected[0])
    same_claims(beta, expected[1])
    assert [d.idempotency_key for d in acme[:3]] == ["c5", "c6", "c7"]  # value, then age
    assert acme[0].attempts == 1 and acme[-1].idempotency_key == "pv29"
    assert [dead_view(d) for d in dead] == [dead_view(d) for d in expected[2]]
    moved = dict(expected[3], delivered=0)  # delivered events stay behind
    moved["spaces"] = {s: dict(c, delivered=0) for s, c in expected[3]["spaces"].items()}  # type: ignore[attr-defined]
    assert stats == moved

    left = sqlite3.connect(path).execute("SELECT status, count(*) FROM outbox GROUP BY status")
    assert dict(left.fetchall()) == {"delivered": 5}


def test_duplicates_are_still_refused_after_the_move(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "outbox.db"
    fill(path)
    asyncio.run(migrate(str(path), redis_url, T0 + 10))

    async def scenario(box: RedisOutbox) -> list[Enqueued]:
        again = [event("c0"), event("c1"), event("b3", space="beta"), event("short"), event("new")]
        return await box.enqueue(again, T0 + 10)

    # c0 was delivered, c1 is queued, b3 queued: all still known; "short" had expired.
    assert run_with(RedisOutbox(redis_url), scenario) == [
        Enqueued(Outcome.DUPLICATE, "c0"), Enqueued(Outcome.DUPLICATE, "c1"),
        Enqueued(Outcome.DUPLICATE, "b3"), QUEUED, QUEUED,
    ]  # fmt: skip


def fill_twins(path: Path) -> None:
    """A SQLite outbox of trust tiers: a held API event and a held browser event, an event
    merged from both sources (the API's key, the browser's payload as its twin), and keys whose
    events stay behind (delivered) or are dead."""

    async def scenario(box: SQLiteOutbox) -> None:
        await box.enqueue([ev("held-api", API, held=True, amount=10)], T0)
        await box.enqueue([ev("held-browser", BROWSER, held=True, order="7", comet_token="t1")], T0)
        merged = await box.enqueue(
            [ev("m", BROWSER, held=True, order="9", comet_token="t2"),
             ev("m-api", API, order="9", amount=5)], T0,
        )  # fmt: skip
        assert merged[1] == Enqueued(Outcome.MERGED, "m")
        await box.enqueue([ev("gone", API), ev("bad", BROWSER)], T0)
        claimed = {c.idempotency_key: c for c in await box.claim("acme", 10, 30, T0)}
        assert sorted(claimed) == ["bad", "gone", "m-api"]  # the held ones wait
        await box.delivered([claimed["gone"].id], T0 + 1)
        await box.dead(claimed["bad"].id, 422, "bad", T0 + 1)
        await box.release([claimed["m-api"].id])

    run_with(SQLiteOutbox(str(path)), scenario)


Moved = tuple[list[tuple[object, ...]], float | None, list[Enqueued]]


def after_the_move(box: Outbox) -> Moved:
    """What an outbox makes of the moved events: claims (key, source, twin, body, attempts,
    received_at) before and after the holds' twins came, when the held ones are due, and how
    each moved key meets a later event of either source."""

    def view(c: Claimed) -> tuple[object, ...]:
        return (c.idempotency_key, c.source, c.twin, c.body(), c.attempts, c.received_at)

    async def scenario(box: Outbox) -> Moved:
        claims = [view(c) for c in await box.claim("acme", 10, 30, T0 + 10)]
        await box.delivered([c.id for c in await box.claim("acme", 10, 30, T0 + 40)], T0 + 11)
        due = await box.next_due("acme")  # the holds, kept
        answers = await box.enqueue(
            [ev("held-api", BROWSER, comet_token="late"), ev("srv-7", API, order="7", amount=20),
             ev("m", BROWSER), ev("m-api", API), ev("gone", API), ev("gone", BROWSER),
             ev("bad", BROWSER), ev("held-browser", BROWSER), ev("held-browser", API)], T0 + 12,
        )  # fmt: skip
        claims += [view(c) for c in await box.claim("acme", 10, 30, T0 + 12)]
        return claims, due, answers

    return run_with(box, scenario)


@pytest.mark.parametrize("interrupted", [False, True], ids=["one-run", "resumed"])
def test_migrate_carries_sources_twins_holds_and_what_each_key_names(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, interrupted: bool
) -> None:
    path = tmp_path / "outbox.db"
    fill_twins(path)
    shutil.copy(path, tmp_path / "copy.db")
    expected = after_the_move(SQLiteOutbox(str(tmp_path / "copy.db")))

    if interrupted:  # the first event moved, the second reached Redis only: the run stopped
        real_delete = relay.store.migrate._delete
        deletes: list[list[int]] = []

        def crash_on_second_chunk(conn: sqlite3.Connection, ids: list[int]) -> None:
            deletes.append(ids)
            if len(deletes) == 2:
                raise KeyboardInterrupt
            real_delete(conn, ids)

        monkeypatch.setattr(relay.store.migrate, "_delete", crash_on_second_chunk)
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(migrate(str(path), redis_url, T0 + 5, chunk=1))
        monkeypatch.setattr(relay.store.migrate, "_delete", real_delete)
    report = asyncio.run(migrate(str(path), redis_url, T0 + 5, chunk=1))
    assert (report.queued, report.dead, report.dedup_keys) == (3 - interrupted, 1, 8)

    async def waiting(box: RedisOutbox) -> object:
        return await box.link.do(lambda r: r.zrange("comet:{acme}:wait", 0, -1))

    assert run_with(RedisOutbox(redis_url), waiting) == [b"1", b"2"]  # the held ones, apart
    moved = after_the_move(RedisOutbox(redis_url))

    assert moved == expected  # Redis answers as the SQLite outbox would have
    claims, due, answers = moved
    assert [c[:2] for c in claims] == [("m-api", API), ("held-api", API), ("srv-7", API)]
    assert all(c[2] is not None for c in claims)  # each met its twin
    body = claims[2][3]
    assert isinstance(body, bytes) and json.loads(body)["comet_token"] == "t1"  # the twin's
    assert due == T0 + HOLD
    assert answers == [
        Enqueued(Outcome.MERGED, "held-api"), Enqueued(Outcome.MERGED, "held-browser"),
        Enqueued(Outcome.DUPLICATE, "m-api"), Enqueued(Outcome.DUPLICATE, "m-api"),
        Enqueued(Outcome.DUPLICATE, "gone"), Enqueued(Outcome.DUPLICATE, "gone"),
        Enqueued(Outcome.DUPLICATE, "bad"),
        Enqueued(Outcome.DUPLICATE, "srv-7"),  # the browser's own key names the API event
        Enqueued(Outcome.DUPLICATE, "srv-7"),
    ]  # fmt: skip


def test_an_interrupted_migration_resumes_without_duplicates(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.db"
    fill(path)
    real_delete = relay.store.migrate._delete
    deletes = []

    def crash_on_second_chunk(conn: sqlite3.Connection, ids: list[int]) -> None:
        deletes.append(ids)
        if len(deletes) == 2:
            raise KeyboardInterrupt  # after the chunk reached Redis, before SQLite let it go
        real_delete(conn, ids)

    monkeypatch.setattr(relay.store.migrate, "_delete", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(migrate(str(path), redis_url, LATER - 100, chunk=20))
    monkeypatch.setattr(relay.store.migrate, "_delete", real_delete)

    report = asyncio.run(migrate(str(path), redis_url, LATER - 100, chunk=20))
    assert report.skipped == 20
    acme, beta, _, stats = drain(RedisOutbox(redis_url))
    assert (stats["queued"], stats["dead"]) == (87, 4)
    keys = [c.idempotency_key for c in acme + beta]
    assert len(keys) == len(set(keys)) == 87

    async def marks(box: RedisOutbox) -> int:
        return int(await box.link.do(lambda r: r.exists("comet:{acme}:migrated")))

    assert run_with(RedisOutbox(redis_url), marks) == 0  # a complete run forgets its marks


def test_migrate_refuses_while_a_forwarder_holds_leases(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "outbox.db"

    async def scenario(box: SQLiteOutbox) -> None:
        await box.enqueue([event("a")], T0)
        await box.claim("acme", 1, 30, T0)

    run_with(SQLiteOutbox(str(path)), scenario)
    with pytest.raises(MigrationError, match="stop every relay"):
        asyncio.run(migrate(str(path), redis_url, T0 + 10))
    report = asyncio.run(migrate(str(path), redis_url, T0 + 30))  # the lease ran out
    assert report.queued == 1


def test_migrate_needs_an_outbox_file(tmp_path: Path, redis_url: str) -> None:
    with pytest.raises(MigrationError, match="no such"):
        asyncio.run(migrate(str(tmp_path / "missing.db"), redis_url, T0))
    (tmp_path / "other.db").write_bytes(b"")
    with pytest.raises(MigrationError, match="not a SQLite outbox"):
        asyncio.run(migrate(str(tmp_path / "other.db"), redis_url, T0))
    assert not (tmp_path / "missing.db").exists()
    assert HOUR  # the shared helpers' clock
