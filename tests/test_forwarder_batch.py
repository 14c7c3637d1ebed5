"""The forwarder's batch of reserved starts, in-process against a real upstream process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relay.delivery.forwarder import Forwarder
from relay.delivery.pacing.memory import MemoryPacer
from relay.delivery.space_state import Start, state_for
from relay.delivery.transport import forwarding_client
from relay.delivery.upstream import Upstream
from relay.settings import Settings
from relay.settings import Space as SpaceSettings
from relay.store.base import Claimed, NewEvent
from relay.store.sqlite import SQLiteOutbox
from tests.support import UpstreamProcess

RETRY_AFTER = 30.0


@pytest.mark.parametrize(("rate", "batch"), [(60, 1), (1000, 5), (6000, 25), (12000, 50),
                                             (60000, 50)])
def test_a_batch_is_a_quarter_second_of_starts_up_to_fifty(rate: int, batch: int) -> None:
    """Up to 12,000/min a claim holds a quarter second of starts: a conversion accepted now
    waits behind at most that many queued events; above it, at most 50 (on Redis each batch
    is three round trips, worth a sixth of a delivery's CPU at batches of 20)."""
    space = SpaceSettings("acme", upstream_url="http://127.0.0.1:9/track",
                          upstream_rate_per_minute=rate)
    assert state_for(space).batch == batch


def test_a_429_gives_up_the_starts_reserved_before_it(tmp_path: Path) -> None:
    """At 60,000/min a batch of 50 starts is reserved at once; after a 429 (with one request
    in flight at a time) none of them is used: the next start waits for the Retry-After."""
    states: list[tuple[str, Start]] = []
    naps: list[float] = []
    with UpstreamProcess(tmp_path) as up:
        up.control(script=[{"status": 429, "retry_after": str(int(RETRY_AFTER))}])
        space = SpaceSettings("acme", upstream_url=up.track_url, upstream_rate_per_minute=60000)
        settings = Settings(database=str(tmp_path / "relay.db"), spaces={"acme": space})
        box = SQLiteOutbox(settings.database)

        async def scenario() -> None:
            waited_long = asyncio.Event()

            async def sleep(seconds: float) -> None:  # the forwarder's naps, told, not slept
                naps.append(seconds)
                if abs(seconds - RETRY_AFTER) < 2:  # the Space's loop, waiting out the hold
                    waited_long.set()
                if seconds > 5:  # that, or the pruner's nap: until stop() ends it
                    await asyncio.Event().wait()
                await asyncio.sleep(0)

            def settled(event: Claimed, state: str, *rest: object) -> None:
                start = rest[-1]
                assert isinstance(start, Start)
                states.append((state, start))

            await box.start()
            now = time.time()
            await box.enqueue([NewEvent("acme", "purchase", f"k{i}", b"{}", (), now, now)
                               for i in range(40)], now)
            async with forwarding_client() as client:
                forwarder = Forwarder(settings, box, Upstream(client, 5.0), sleep=sleep,
                                      pacer=MemoryPacer(), concurrency=1, on_settled=settled)
                forwarder.start()
                try:
                    await asyncio.wait_for(waited_long.wait(), 20)  # the loop waits out the hold
                finally:
                    await forwarder.stop(5)
            await box.close()

        asyncio.run(scenario())
        assert [state for state, _ in states] == ["retrying"]
        assert len(up.received()) == 1
        assert any(abs(nap - RETRY_AFTER) < 2 for nap in naps)


class UnstoredHolds(MemoryPacer):
    """A pacer whose holds are never stored (a slow file or Redis): only the forwarder's own
    record of its hold stands between a 429 and the next start."""

    async def hold(self, space: str, until: float, now: float) -> None:
        await asyncio.Event().wait()


def test_a_short_hold_is_waited_out_even_before_the_pacer_stores_it(tmp_path: Path) -> None:
    """A next slot up to a second ahead is taken for other forwarders' batches (reserved
    behind, not waited out), but never this forwarder's own hold: after a 429 with
    Retry-After 0.5 the next request comes at least 0.5 s after the first."""
    with UpstreamProcess(tmp_path) as up:
        up.control(script=[{"status": 429, "retry_after": "0.5"}])
        space = SpaceSettings("acme", upstream_url=up.track_url, upstream_rate_per_minute=6000)
        settings = Settings(database=str(tmp_path / "relay.db"), spaces={"acme": space})
        box = SQLiteOutbox(settings.database)

        async def scenario() -> None:
            await box.start()
            now = time.time()
            await box.enqueue([NewEvent("acme", "purchase", f"k{i}", b"{}", (), now, now)
                               for i in range(3)], now)
            async with forwarding_client() as client:
                forwarder = Forwarder(settings, box, Upstream(client, 5.0),
                                      pacer=UnstoredHolds(), concurrency=4)
                forwarder.start()
                try:
                    deadline = time.monotonic() + 20
                    while len(await asyncio.to_thread(up.received)) < 2:
                        assert time.monotonic() < deadline, "no second request"
                        await asyncio.sleep(0.05)
                finally:
                    await forwarder.stop(1)
            await box.close()

        asyncio.run(scenario())
        first, second = up.received()[:2]
        assert first["status"] == 429
        assert second["at"] - first["at"] >= 0.5
