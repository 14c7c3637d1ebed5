"""Delivered marks are batched; none may be left waiting for its lease to run out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from relay.delivery.forwarder import Forwarder
from relay.delivery.upstream import Upstream
from relay.settings import Settings


class SlowMarks:
    """An outbox stand-in whose `delivered` blocks until the test lets it go."""

    def __init__(self) -> None:
        self.marked: list[list[int]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def delivered(self, ids: Sequence[int], now: float) -> None:
        self.entered.set()
        await self.gate.wait()
        self.marked.append(list(ids))


def test_a_delivery_that_finishes_during_a_flush_is_marked_without_another_delivery() -> None:
    async def scenario() -> list[list[int]]:
        outbox = SlowMarks()
        async with httpx.AsyncClient() as client:
            forwarder = Forwarder(Settings(), outbox, Upstream(client), sleep=lambda s: asyncio.sleep(0))  # type: ignore[arg-type]
            forwarder._mark_delivered(1)
            await asyncio.wait_for(outbox.entered.wait(), 5)  # the first write is under way
            forwarder._mark_delivered(2)  # finishes meanwhile; no later delivery will come
            outbox.gate.set()
            assert forwarder._flush is not None
            await asyncio.wait_for(forwarder._flush, 5)
        return outbox.marked

    assert asyncio.run(scenario()) == [[1], [2]]
