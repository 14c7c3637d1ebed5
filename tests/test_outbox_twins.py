"""Contract tests of trust tiers in the Outbox, on every backend: sources, twins, holds and the
three priorities (the rules of `Outbox.enqueue`, relay/store/base.py).

An API event (a secret key) outranks a browser event (a public site key): a browser event
never makes an API event a duplicate, never replaces it, never delays it; an API event and
its browser twin that meet before either is sent become one event.
"""

from __future__ import annotations

import json

from relay.rules.events import (
    PRIORITY_API_CONVERSION,
    PRIORITY_BROWSER_CONVERSION,
    PRIORITY_PAGE_VIEW,
    NewEvent,
    Source,
)
from relay.store import Outbox
from relay.store.base import Claimed, Enqueued, Outcome
from tests import test_outbox
from tests.test_outbox import HOUR, T0, run

database = test_outbox.database  # the fixture: a fresh store on each backend

HOLD = 60.0
API, BROWSER = Source.API, Source.BROWSER


def ev(
    key: str,
    source: Source,
    *,
    name: str = "purchase",
    order: str | None = None,
    twins: bool = True,
    held: bool = False,
    at: float = T0,
    **fields: object,
) -> NewEvent:
    """An event as `relay.rules.events.new_event` makes it: dedup keys per event name, its
    priority by source, held for `HOLD` seconds when `held`, paired by its keys when `twins`."""
    body: dict[str, object] = {"event_name": name, "idempotency_key": key, **fields}
    keys = [f"idem:{name}:{key}"]
    if order is not None:
        body["order_id"] = order
        keys.append(f"order:{name}:{order}")
    if name == "view_content":
        priority = PRIORITY_PAGE_VIEW
    else:
        priority = PRIORITY_API_CONVERSION if source is API else PRIORITY_BROWSER_CONVERSION
    return NewEvent(
        space="acme",
        event_name=name,
        idempotency_key=key,
        payload=json.dumps(body).encode(),
        dedup_keys=tuple(keys),
        dedup_until=at + 48 * HOUR,
        received_at=at,
        priority=priority,
        source=source,
        due_at=at + HOLD if held else None,
        twin_keys=tuple(keys) if twins else (),
    )


async def claim_all(box: Outbox, now: float = T0) -> list[Claimed]:
    return await box.claim("acme", 100, 30, now)


def sent(event: Claimed) -> dict[str, object]:
    return json.loads(event.body())


MERGED_FROM_BROWSER = {"comet_token": "tok", "fingerprint": "fp", "ip": "203.0.113.7",
                       "url": "https://shop.example/thanks", "comet_campaign": "spring",
                       "user_agent": "Mozilla/5.0", "amount": 0.01, "email": "forger@x.example"}


def test_an_api_event_merges_with_its_earlier_browser_twin(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        assert await box.enqueue([ev("K", BROWSER, held=True, **MERGED_FROM_BROWSER)], T0) == [
            Enqueued(Outcome.QUEUED)
        ]
        (result,) = await box.enqueue([ev("K", API, amount=49, email="jane@shop.example")], T0 + 1)
        assert result == Enqueued(Outcome.MERGED, "K")
        (one,) = await claim_all(box, T0 + 1)  # the hold ended with the merge
        assert (one.source, one.idempotency_key, one.event_name) == (API, "K", "purchase")
        body = sent(one)
        assert body["amount"] == 49 and body["email"] == "jane@shop.example"  # the API's
        for name in ("comet_token", "fingerprint", "ip", "url", "comet_campaign", "user_agent"):
            assert body[name] == MERGED_FROM_BROWSER[name], name  # the browser's visit

    run(database, scenario)


def test_a_browser_event_merges_into_its_earlier_api_twin(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("K", API, held=True, amount=49, order="1001")], T0)
        (result,) = await box.enqueue([ev("K", BROWSER, **MERGED_FROM_BROWSER)], T0 + 2)
        assert result == Enqueued(Outcome.MERGED, "K")
        (one,) = await claim_all(box, T0 + 2)
        assert one.source is API and one.twin is not None
        body = sent(one)
        assert (body["amount"], body["order_id"], body["comet_token"]) == (49, "1001", "tok")
        assert "email" in body and body["email"] == "forger@x.example"  # a gap the API left

    run(database, scenario)


def test_twins_meet_by_order_and_the_api_key_is_kept(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("pixel-1", BROWSER, held=True, order="20418", amount=0.01)], T0)
        (result,) = await box.enqueue([ev("server-9", API, order="20418", amount=120)], T0 + 1)
        assert result == Enqueued(Outcome.MERGED, "pixel-1")
        (one,) = await claim_all(box, T0 + 1)
        assert one.idempotency_key == "server-9" and sent(one)["amount"] == 120
        # both keys now name the one event: retries of either are duplicates
        again = await box.enqueue([ev("server-9", API), ev("pixel-1", BROWSER)], T0 + 2)
        assert [r.outcome for r in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]

    run(database, scenario)


def test_twins_in_one_call_merge_too(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        results = await box.enqueue(
            [ev("K", BROWSER, held=True, comet_token="tok"), ev("K", API, held=True, amount=5)],
            T0,
        )
        assert results == [Enqueued(Outcome.QUEUED), Enqueued(Outcome.MERGED, "K")]
        (one,) = await claim_all(box, T0)
        assert sent(one)["amount"] == 5 and sent(one)["comet_token"] == "tok"

    run(database, scenario)


def test_same_source_repeats_are_duplicates_and_the_first_browser_twin_merges(
    database: str,
) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("A", API, held=True)], T0)
        assert await box.enqueue([ev("A", API)], T0 + 1) == [Enqueued(Outcome.DUPLICATE, "A")]
        first = await box.enqueue([ev("A", BROWSER, comet_token="first")], T0 + 2)
        second = await box.enqueue([ev("A", BROWSER, comet_token="second")], T0 + 3)
        assert [first[0].outcome, second[0].outcome] == [Outcome.MERGED, Outcome.DUPLICATE]
        await box.enqueue([ev("B", BROWSER, held=True)], T0)
        assert await box.enqueue([ev("B", BROWSER)], T0 + 1) == [
            Enqueued(Outcome.DUPLICATE, "B")
        ]
        (a,) = [c for c in await claim_all(box, T0 + 3) if c.idempotency_key == "A"]
        assert sent(a)["comet_token"] == "first"

    run(database, scenario)


def test_a_page_view_with_a_key_does_not_make_a_purchase_a_duplicate(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        results = await box.enqueue(
            [ev("X", BROWSER, name="view_content"), ev("X", API, held=True)], T0
        )
        assert [r.outcome for r in results] == [Outcome.QUEUED, Outcome.QUEUED]

    run(database, scenario)


def test_without_twin_keys_the_api_event_is_queued_beside_the_browser_one(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("K", BROWSER, twins=False, amount=0.01)], T0)
        assert await box.enqueue([ev("K", API, twins=False, amount=49)], T0) == [
            Enqueued(Outcome.QUEUED, "K")
        ]
        # the keys name the API event now: a later browser event is its duplicate
        assert (await box.enqueue([ev("K", BROWSER, twins=False)], T0))[0].outcome is (
            Outcome.DUPLICATE
        )
        claimed = await claim_all(box)
        assert sorted((c.source.value, sent(c)["amount"]) for c in claimed) == [
            ("api", 49), ("browser", 0.01)
        ]

    run(database, scenario)


def test_a_twin_after_delivery_the_browser_one_is_a_duplicate_the_api_one_is_queued(
    database: str,
) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("A", API), ev("B", BROWSER)], T0)
        claimed = await claim_all(box)
        await box.delivered([c.id for c in claimed], T0 + 1)
        late = await box.enqueue([ev("A", BROWSER), ev("B", API, amount=3)], T0 + 2)
        assert late == [Enqueued(Outcome.DUPLICATE, "A"), Enqueued(Outcome.QUEUED, "B")]
        (b,) = await claim_all(box, T0 + 2)
        assert (b.source, sent(b)["amount"]) == (API, 3)

    run(database, scenario)


def test_an_event_in_flight_takes_no_twin(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("A", API), ev("B", BROWSER)], T0)
        await claim_all(box)  # both leased for 30 s
        late = await box.enqueue([ev("A", BROWSER), ev("B", API)], T0 + 1)
        assert [r.outcome for r in late] == [Outcome.DUPLICATE, Outcome.QUEUED]

    run(database, scenario)


def test_a_held_event_waits_and_a_merge_releases_it(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("A", API, held=True), ev("B", BROWSER, held=True)], T0)
        assert await claim_all(box, T0 + HOLD - 1) == []
        assert await box.next_due("acme") == T0 + HOLD
        await box.enqueue([ev("B", API)], T0 + 5)  # B's twin: B goes now, A still waits
        (b,) = await claim_all(box, T0 + 5)
        assert b.idempotency_key == "B"
        await box.delivered([b.id], T0 + 6)
        assert [c.idempotency_key for c in await claim_all(box, T0 + HOLD)] == ["A"]

    run(database, scenario)


def test_a_retried_event_keeps_its_backoff_when_its_twin_arrives(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("A", API)], T0)
        (a,) = await claim_all(box)
        await box.retry(a.id, T0 + 100, 503, "busy", T0 + 1)
        assert (await box.enqueue([ev("A", BROWSER)], T0 + 2))[0].outcome is Outcome.MERGED
        assert await claim_all(box, T0 + 50) == []
        assert [c.idempotency_key for c in await claim_all(box, T0 + 100)] == ["A"]

    run(database, scenario)


def test_api_conversions_then_browser_conversions_then_page_views(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue(
            [ev("pv", BROWSER, name="view_content"), ev("b1", BROWSER), ev("a1", API),
             ev("b2", BROWSER), ev("a2", API)],
            T0,
        )
        assert [c.idempotency_key for c in await claim_all(box)] == ["a1", "a2", "b1", "b2", "pv"]

    run(database, scenario)


def test_a_browser_row_taken_over_by_its_api_twin_is_an_api_conversion(database: str) -> None:
    async def scenario(box: Outbox) -> None:
        await box.enqueue([ev("b-first", BROWSER), ev("K", BROWSER)], T0)
        await box.enqueue([ev("K", API)], T0)
        assert [c.idempotency_key for c in await claim_all(box)] == ["K", "b-first"]

    run(database, scenario)
