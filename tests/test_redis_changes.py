"""The Redis outbox's change feed across Spaces (the single-Space contract is shared with SQLite
in tests/test_cli_outbox.py)."""

from __future__ import annotations

import pytest

from relay.store.base import ChangeFeed
from relay.store.redis import RedisOutbox
from tests.test_outbox import T0, event, run_with


def test_pages_merge_the_spaces_logs_and_take_each_step_once(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        assert isinstance(box, ChangeFeed)
        await box.enqueue([event("early", space="beta")], T0)
        cursor = (await box.changes(None)).cursor
        for i in range(6):
            await box.enqueue([event(f"a{i}"), event(f"b{i}", space="beta")], T0 + i)
        for space in ("acme", "beta"):
            claimed = await box.claim(space, 10, 30, T0 + 10)
            for c in reversed(claimed):
                await box.delivered([c.id], T0 + 11)
        await box.enqueue([event("g", space="gamma")], T0 + 12)  # a Space new since the cursor

        seen: list[tuple[str, str, str]] = []
        for _ in range(40):
            page = await box.changes(cursor, limit=3)
            kinds = [c.state == "accepted" for c in page.changes]
            assert kinds == sorted(kinds, reverse=True)  # acceptances, then later steps
            assert sum(kinds) <= 3 and len(kinds) - sum(kinds) <= 3
            seen += [(c.space, c.idempotency_key, c.state) for c in page.changes]
            cursor = page.cursor
            if not page.changes:
                break
        expected = [(s, f"{s[0]}{i}", st) for s in ("acme", "beta") for i in range(6)
                    for st in ("accepted", "delivered")]  # fmt: skip
        expected += [("beta", "early", "delivered"), ("gamma", "g", "accepted")]
        assert sorted(seen) == sorted(expected)
        for space, key, state in seen:
            if state == "delivered" and key != "early":
                assert seen.index((space, key, "accepted")) < seen.index((space, key, state))

    run_with(RedisOutbox(redis_url), scenario)


def test_a_change_names_its_event(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        cursor = (await box.changes(None)).cursor
        await box.enqueue([event("a", space="beta", name="lead_generated")], T0)
        (claimed,) = await box.claim("beta", 1, 30, T0)
        await box.dead(claimed.id, 422, "bad phone", T0 + 1)
        accepted, dead = (await box.changes(cursor)).changes
        assert (accepted.id, accepted.space, accepted.event_name) == (
            claimed.id, "beta", "lead_generated")  # fmt: skip
        assert (accepted.at, dead.at, dead.attempts) == (T0, T0 + 1, 1)
        assert (dead.state, dead.last_status, dead.last_message) == ("dead", 422, "bad phone")

    run_with(RedisOutbox(redis_url), scenario)


def test_a_cursor_of_another_backend_is_refused(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        with pytest.raises(ValueError, match="not a cursor"):
            await box.changes("12-40")

    run_with(RedisOutbox(redis_url), scenario)
