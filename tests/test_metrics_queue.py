"""The outbox gauges of /metrics by Space and priority, after a scripted run, on both backends.

`queue_figures` (depth and oldest queued event per Space and priority) is driven through
enqueue, claim, retry, dead, replay and delivery with a controlled clock, then rendered as
`comet_queue_depth{space, priority}` and `comet_oldest_queued_age_seconds{space, priority}`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.observe.metrics import Metrics
from relay.rules.events import PRIORITY_API_CONVERSION as CONVERSION
from relay.rules.events import PRIORITY_BROWSER_CONVERSION as BROWSER_CONVERSION
from relay.rules.events import PRIORITY_PAGE_VIEW as PAGE_VIEW
from relay.store import Outbox, open_outbox
from relay.store.base import Enqueued, NewEvent, OutboxStats, Outcome, QueueAges, QueueFigures
from relay.store.redis import RedisOutbox
from tests.redis_server import RedisServer
from tests.test_metrics import Samples, samples, value
from tests.test_outbox import T0, database, event, run, run_with
from tests.test_outbox_twins import API, BROWSER, ev

__all__ = ["database"]  # the fixture: every backend, as in the contract tests

DEPTH = "comet_queue_depth"
AGE = "comet_oldest_queued_age_seconds"


def conversion(key: str, received: float, space: str = "acme") -> NewEvent:
    return replace(event(key, space=space), received_at=received)


def page_view(key: str, received: float, space: str = "acme") -> NewEvent:
    return replace(event(key, space=space, name="view_content", priority=PAGE_VIEW),
                   received_at=received)


async def figures(box: Outbox) -> QueueFigures:
    assert isinstance(box, QueueAges)
    found = await box.queue_figures()
    stats = await box.stats()
    for space, counts in stats.spaces.items():  # the depths add up to the queued count
        assert counts["queued"] == sum(n for (s, _), n in found.depth.items() if s == space)
    return found


def gauges(box_figures: QueueFigures, stats_spaces: list[str], now: float) -> Samples:
    stats = OutboxStats(spaces={s: {"queued": 0} for s in stats_spaces})
    return samples(Metrics().render(stats, box_figures, now).decode())


def test_depth_and_oldest_follow_each_event_by_space_and_priority(database: str) -> None:
    async def scenario(box: Outbox) -> list[QueueFigures]:
        seen = []
        await box.enqueue([conversion("c1", T0), conversion("c2", T0 + 1)], T0 + 1)
        await box.enqueue([page_view("p1", T0 + 2), page_view("p2", T0 + 3)],
                          T0 + 3)
        await box.enqueue([page_view("p3", T0 + 5, space="beta")], T0 + 5)
        seen.append(await figures(box))

        (c1,) = await box.claim("acme", 1, 30, T0 + 10)  # leased: still queued, still oldest
        seen.append(await figures(box))
        await box.retry(c1.id, T0 + 100, 503, "busy", T0 + 11)  # waiting for its retry
        c2, p1 = await box.claim("acme", 2, 30, T0 + 12)  # conversions first, then page views
        await box.delivered([c2.id], T0 + 13)
        await box.dead(p1.id, 422, "blocked", T0 + 13)
        seen.append(await figures(box))

        assert await box.replay([p1.id], T0 + 20) == 1  # queued again: the oldest page view
        seen.append(await figures(box))

        due = await box.claim("acme", 10, 30, T0 + 200) + await box.claim("beta", 10, 30, T0 + 200)
        await box.delivered([e.id for e in due], T0 + 201)
        seen.append(await figures(box))
        return seen

    accepted, leased, settled, replayed, drained = run(database, scenario)
    acme_c, acme_p, beta_p = ("acme", CONVERSION), ("acme", PAGE_VIEW), ("beta", PAGE_VIEW)

    assert accepted.depth == {acme_c: 2, acme_p: 2, beta_p: 1}
    assert accepted.oldest == {acme_c: T0, acme_p: T0 + 2, beta_p: T0 + 5}
    assert leased == accepted
    # c1 waits for its retry, c2 is delivered, p1 is dead
    assert settled.depth == {acme_c: 1, acme_p: 1, beta_p: 1}
    assert settled.oldest == {acme_c: T0, acme_p: T0 + 3, beta_p: T0 + 5}
    assert replayed.depth == {acme_c: 1, acme_p: 2, beta_p: 1}
    assert replayed.oldest == {acme_c: T0, acme_p: T0 + 2, beta_p: T0 + 5}
    assert drained == QueueFigures()

    seen = gauges(replayed, ["acme", "beta"], now=T0 + 60)
    assert value(seen, DEPTH, space="acme", priority="api_conversion") == 1
    assert value(seen, DEPTH, space="acme", priority="page_view") == 2
    assert value(seen, DEPTH, space="beta", priority="page_view") == 1
    assert (DEPTH, frozenset({"space": "beta", "priority": "api_conversion"}.items())) in seen
    assert value(seen, AGE, space="acme", priority="api_conversion") == 60
    assert value(seen, AGE, space="acme", priority="page_view") == 58
    assert value(seen, AGE, space="beta", priority="page_view") == 55
    assert not [labels for name, labels in seen if name == AGE and ("space", "beta") in labels
                and ("priority", "api_conversion") in labels]  # nothing queued: no age

    empty = gauges(drained, ["acme", "beta"], now=T0 + 300)
    assert [v for (name, _), v in empty.items() if name == DEPTH] == [0.0] * 6  # 2 Spaces x 3
    assert not [name for name, _ in empty if name == AGE]


def test_browser_conversions_have_their_own_figures_until_an_api_twin_takes_one_over(
    database: str,
) -> None:
    async def scenario(box: Outbox) -> list[QueueFigures]:
        await box.enqueue([ev("b1", BROWSER, at=T0), ev("b2", BROWSER, at=T0 + 1),
                           ev("a1", API, at=T0 + 2),
                           ev("pv", BROWSER, name="view_content", at=T0 + 3)], T0 + 3)
        before = await figures(box)
        assert await box.enqueue([ev("b1", API, at=T0 + 4)], T0 + 4) == [
            Enqueued(Outcome.MERGED, "b1")
        ]
        return [before, await figures(box)]

    before, after = run(database, scenario)
    api, browser, views = ("acme", CONVERSION), ("acme", BROWSER_CONVERSION), ("acme", PAGE_VIEW)
    assert before.depth == {api: 1, browser: 2, views: 1}
    assert before.oldest == {api: T0 + 2, browser: T0, views: T0 + 3}
    # b1 is an API conversion now, received when the browser sent it
    assert after.depth == {api: 2, browser: 1, views: 1}
    assert after.oldest == {api: T0, browser: T0 + 1, views: T0 + 3}
    seen = gauges(after, ["acme"], now=T0 + 10)
    assert value(seen, DEPTH, space="acme", priority="browser_conversion") == 1
    assert value(seen, AGE, space="acme", priority="browser_conversion") == 9


def test_redis_rebuilds_the_queued_indexes_a_relay_from_before_them_did_not_keep(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Events queued before the queued:* indexes existed are found, in every set they can be."""

    async def scenario(box: RedisOutbox) -> tuple[QueueFigures, QueueFigures]:
        await box.enqueue([conversion(f"c{i}", T0 + i) for i in range(3)], T0 + 3)
        await box.enqueue([page_view(f"p{i}", T0 + 10 + i) for i in range(3)], T0 + 13)
        c0, _ = await box.claim("acme", 2, 30, T0 + 20)  # leased
        await box.retry(c0.id, T0 + 500, None, "timeout", T0 + 21)  # waiting
        before = await box.queue_figures()
        for priority in (0, 1, 2):  # as an older relay would have left them: absent
            redis_server.command("DEL", f"comet:{{acme}}:queued:{priority}")
        return before, await box.queue_figures()

    before, rebuilt = run_with(RedisOutbox(redis_url), scenario)
    assert rebuilt == before
    assert rebuilt.depth == {("acme", CONVERSION): 3, ("acme", PAGE_VIEW): 3}
    assert rebuilt.oldest == {("acme", CONVERSION): T0, ("acme", PAGE_VIEW): T0 + 10}
    assert redis_server.command("ZCARD", "comet:{acme}:queued:0") == b":3\r\n"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_both_backends_answer_queue_figures(backend: str, request: pytest.FixtureRequest) -> None:
    """`serve` and `forward` read the figures only if the outbox says it can give them."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else "outbox.db"
    assert isinstance(open_outbox(url), QueueAges)
