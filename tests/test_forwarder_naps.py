"""The forwarder's waits end late rather than early, and one nap covers one wait: event
loops' timers may fire about a millisecond early, which must not turn the per-second cap into
a string of naps per request. In-process, against a real upstream process, with the clock
and the sleep injected (each nap of the Space's loop "wakes" 0.9 ms early and moves the
clock; the flush of delivered marks, another task, does not move it)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from relay.delivery.forwarder import DELIVERED_FLUSH, Forwarder
from relay.delivery.pacing.memory import MemoryPacer
from relay.delivery.space_state import Start
from relay.delivery.transport import forwarding_client
from relay.delivery.upstream import Upstream
from relay.settings import Settings
from relay.settings import Space as SpaceSettings
from relay.store.base import Claimed, NewEvent
from relay.store.sqlite import SQLiteOutbox
from tests.support import UpstreamProcess, most_within_a_second

EARLY = 0.0009  # how much sooner than asked each nap ends
EVENTS = 4


@pytest.mark.parametrize("rate", [60, 90])  # 60/min: the per-second cap binds; 90: the slots
def test_waits_end_late_not_early_and_the_cap_is_one_nap(tmp_path: Path, rate: int) -> None:
    starts: list[float] = []
    early: list[Start] = []  # started before their slot
    naps: list[float] = []
    with UpstreamProcess(tmp_path) as up:
        space = SpaceSettings("acme", upstream_url=up.track_url, upstream_rate_per_minute=rate)
        settings = Settings(database=str(tmp_path / "relay.db"), spaces={"acme": space})
        box = SQLiteOutbox(settings.database)
        clock = [time.time()]

        async def scenario() -> None:
            done = asyncio.Event()

            async def sleep(seconds: float) -> None:
                naps.append(seconds)
                if seconds > 5:  # the pruner's and the idle loop's naps: until stop() ends them
                    await asyncio.Event().wait()
                if seconds == DELIVERED_FLUSH:  # the marks' flush: its own task, not the clock's
                    await asyncio.sleep(0)
                    return
                clock[0] += max(0.0, seconds - EARLY)
                await asyncio.sleep(0)

            def settled(event: Claimed, state: str, *rest: object) -> None:
                start = rest[-1]
                assert isinstance(start, Start)
                starts.append(start.at)
                if start.at < start.slot:
                    early.append(start)
                if len(starts) == EVENTS:
                    done.set()

            await box.start()
            now = clock[0]
            await box.enqueue([NewEvent("acme", "purchase", f"k{i}", b"{}", (), now, now)
                               for i in range(EVENTS)], now)
            async with forwarding_client() as client:
                forwarder = Forwarder(settings, box, Upstream(client, 5.0), sleep=sleep,
                                      clock=lambda: clock[0], pacer=MemoryPacer(),
                                      idle_poll=60.0, on_settled=settled)
                forwarder.start()
                try:
                    await asyncio.wait_for(done.wait(), 20)
                finally:
                    await forwarder.stop(5)
            await box.close()

        asyncio.run(scenario())
    assert len(starts) == EVENTS
    assert most_within_a_second(starts) <= math.ceil(rate / 60), starts
    assert not [n for n in naps if 0 < n < 0.01]  # no nap for the last sliver of a wait
    assert early == []


def test_a_short_nap_is_a_plain_sleep_and_a_long_one_ends_when_stop_begins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a high rate every start naps a few ms: a plain sleep (a third of the CPU of one that
    also watches for the stop). A longer nap (a hold, a slow rate) still ends at the stop."""

    def watched(*args: object, **kwargs: object) -> None:
        raise AssertionError("a short nap watched for the stop")

    async def scenario() -> None:
        forwarder = Forwarder(Settings(), None, None)  # type: ignore[arg-type]  # naps only
        with monkeypatch.context() as patched:
            patched.setattr(asyncio, "wait", watched)
            await forwarder._pause(0.002)
        long_nap = asyncio.create_task(forwarder._pause(600))
        await asyncio.sleep(0)
        assert not long_nap.done()
        await forwarder.stop(1)
        await asyncio.wait_for(long_nap, 5)

    asyncio.run(scenario())
