"""A Space's delivery state in the forwarder, and the timing rules on it: no I/O here.

`SpaceState` is what one forwarder knows of one Space (its buffer of claimed events, the
starts it reserved, its last second of starts, its holds and failures); `earliest_start` is
when a reserved start may go under the per-second cap; `backoff` is the retry schedule.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field

from relay.settings import Space
from relay.store.base import Claimed

BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0


def backoff(attempts: int, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempts)]."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(attempts, 30)))


@dataclass(frozen=True)
class Start:
    """When one request was started: `slot`, the start the pacer reserved for it (a Space's
    slots are at least one interval apart, all its forwarders together), and `at`, when this
    forwarder let it go (after `slot`; at most `per_second` in any second). Reported with
    the attempt's outcome, so pacing can be judged by the relay's own records."""

    slot: float
    at: float


@dataclass
class SpaceState:
    space: Space
    interval: float  # seconds between request starts
    batch: int  # events claimed at a time
    failures: int = 0  # consecutive retryable failures: the Space backs off as a whole
    pause: float = 0.0  # current 401/403 pause length; 0 when not paused
    paused_until: float = 0.0
    buffer: deque[Claimed] = field(default_factory=deque)
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    per_second: int = 1  # most starts in any sliding second: leaves the +1 for jitter
    starts: deque[float] = field(default_factory=deque)  # start times of the last second
    slots: deque[float] = field(default_factory=deque)  # reserved starts not used yet
    holds: int = 0  # holds so far: a start reserved before one is not used
    held_until: float = 0.0  # the latest hold this forwarder asked for


# The most events claimed (and starts reserved) at a time: a quarter second of starts up to
# 12,000/min. Each batch costs a claim, a reservation and a read of the next slot; on Redis
# those round trips cost 487 us of CPU per delivered event at 12,000/min with batches of 20
# against 407 with 50, in one process (bench/README.md, issue 16); on SQLite the same either way.
BATCH_MAX = 50


def state_for(space: Space) -> SpaceState:
    """A Space's state at the start: its interval, its batch (a quarter second of starts, at
    most BATCH_MAX) and its cap of starts in any second (rate/60, leaving the +1 for jitter)."""
    per_second = space.upstream_rate_per_minute / 60.0
    return SpaceState(
        space=space,
        interval=60.0 / space.upstream_rate_per_minute,
        batch=max(1, min(BATCH_MAX, math.ceil(per_second * 0.25))),
        per_second=max(1, math.ceil(per_second)),
    )


def earliest_start(st: SpaceState, slot: float, now: float) -> float:
    """When the start reserved for `slot` may go: at its slot, and, after a stall brought
    several due slots at once, once fewer than rate/60 starts are in the last second, so
    network jitter cannot push the upstream's count past rate/60 + 1."""
    while st.starts and now - st.starts[0] >= 1.0:
        st.starts.popleft()
    if len(st.starts) >= st.per_second:
        return max(slot, st.starts[-st.per_second] + 1.0)
    return slot
