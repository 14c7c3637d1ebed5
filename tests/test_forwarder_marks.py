"""Delivered marks are batched; none may be left waiting for its lease to run out, and each
delivered event is reported before its mark is written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from relay.delivery.forwarder import Forwarder
from relay.delivery.space_state import Start
from relay.delivery.upstream import Outcome, Upstream, Verdict
from relay.settings import Settings
from relay.store.base import Claimed


def delivery(event_id: int) -> tuple[Claimed, Outcome, float, Start]:
    """What the forwarder keeps of a delivered event until its mark is flushed."""
    event = Claimed(id=event_id, space="acme", event_name="purchase",
                    idempotency_key=f"k{event_id}", payload=b"{}", attempts=0,
                    received_at=1000.0, lease_until=1100.0)
    return event, Outcome(Verdict.DELIVERED, 202, "ok"), 0.25, Start(1000.0 + event_id, 1000.5 + event_id)


class SlowMarks:
    """An outbox stand-in whose `delivered` blocks until the test lets it go."""

    def __init__(self, told: list[int] | None = None) -> None:
        self.marked: list[list[int]] = []
        self.told_at_mark: list[list[int]] = []  # the reports told when each mark began
        self.told = told if told is not None else []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        self.told_at_mark.append(list(self.told))
        self.entered.set()
        await self.gate.wait()
        self.marked.append(list(ids))


def test_a_delivery_that_finishes_during_a_flush_is_marked_without_another_delivery() -> None:
    async def scenario() -> list[list[int]]:
        outbox = SlowMarks()
        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(Settings(), outbox, Upstream(client), sleep=lambda s: asyncio.sleep(0))  # type: ignore[arg-type]
            forwarder._mark_delivered(delivery(1))
            await asyncio.wait_for(outbox.entered.wait(), 5)  # the first write is under way
            forwarder._mark_delivered(delivery(2))  # finishes meanwhile; no later delivery will come
            outbox.gate.set()
            assert forwarder._flush is not None
            await asyncio.wait_for(forwarder._flush, 5)
        return outbox.marked

    assert asyncio.run(scenario()) == [[1], [2]]


@pytest.mark.parametrize("failing_report", [False, True])
def test_delivered_events_are_reported_at_their_flush_before_their_mark(failing_report: bool) -> None:
    """A kill before the mark sends the event again, so its report is never lost for good;
    a report that fails keeps no event from its mark."""
    told: list[int] = []
    reports: list[tuple[str, Start]] = []

    def settled(event: Claimed, state: str, outcome: Outcome, seconds: float,
                next_at: float | None, start: Start) -> None:
        told.append(event.id)
        reports.append((state, start))
        if failing_report:
            raise RuntimeError("a broken observer")

    async def scenario() -> SlowMarks:
        outbox = SlowMarks(told)
        outbox.gate.set()
        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(Settings(), outbox, Upstream(client),  # type: ignore[arg-type]
                                  sleep=lambda s: asyncio.sleep(0), on_settled=settled)
            forwarder._mark_delivered(delivery(1))
            forwarder._mark_delivered(delivery(2))
            assert told == []  # told with the flush, not one at a time
            await asyncio.sleep(0)  # the flush task's first step: it waits DELIVERED_FLUSH
            assert told == []
            assert forwarder._flush is not None
            await asyncio.wait_for(forwarder._flush, 5)
        return outbox

    outbox = asyncio.run(scenario())
    assert outbox.marked == [[1, 2]]
    assert outbox.told_at_mark == [[1, 2]]
    assert reports == [("delivered", delivery(1)[3]), ("delivered", delivery(2)[3])]
