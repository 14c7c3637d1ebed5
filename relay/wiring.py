"""Building the relay's parts from its settings, once, for `serve` and `forward` alike.

    build(settings) ─> Parts: outbox, rate limiter, metrics, observer, journal,
                              forwarder (with its pacer and HTTP client), intake

Every part is made here, in the order each needs the others, so nothing is wired by
assigning callbacks afterwards. `async with parts:` starts what connects (the outbox, the
limiter, the pacer) and the forwarder, and on the way out stops them in reverse: the
forwarder drains first (its requests in flight get `shutdown_timeout`), the stores close last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from relay.delivery.forwarder import Forwarder
from relay.delivery.pacing import open_pacer
from relay.delivery.transport import forwarding_client
from relay.delivery.upstream import Upstream
from relay.intake import Intake
from relay.lifecycle import Lifecycle
from relay.limits import open_limiter
from relay.limits.base import RateLimiter
from relay.observe.eventlog import configure_event_log
from relay.observe.journal import Journal
from relay.observe.metrics import Metrics
from relay.observe.observer import Observer
from relay.settings import Settings
from relay.store import Outbox, open_outbox


@dataclass
class Parts(Lifecycle):
    """The relay's parts for one process; `async with` runs them."""

    settings: Settings
    outbox: Outbox
    metrics: Metrics
    observer: Observer
    clock: Callable[[], float]
    limiter: RateLimiter | None = None  # only where events are received
    intake: Intake | None = None  # likewise
    journal: Journal | None = None  # the debugger's, when an admin token is set
    forwarder: Forwarder | None = None  # None: this process does not forward
    shutdown_timeout: float = 10.0
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def start(self) -> None:
        """Start the stores, then the forwarder; see the module docstring."""
        stack = self._stack
        await stack.enter_async_context(self.outbox)
        if self.limiter is not None:
            await stack.enter_async_context(self.limiter)
        if self.forwarder is not None:
            forwarder = self.forwarder
            await stack.enter_async_context(forwarder.upstream.client)
            await stack.enter_async_context(forwarder.pacer)
            forwarder.start()
            stack.push_async_callback(forwarder.stop, self.shutdown_timeout)

    async def close(self) -> None:
        """Drain the forwarder, then close what `start` opened, in reverse."""
        await self._stack.aclose()


def build(
    settings: Settings,
    *,
    receive: bool = True,
    forward: bool = True,
    outbox: Outbox | None = None,
    limiter: RateLimiter | None = None,
    clock: Callable[[], float] = time.time,
    shutdown_timeout: float = 10.0,
) -> Parts:
    """The parts of a process that receives events (`receive`, as `serve` does) and forwards
    them (`forward`: a forwarder delivers to every active Space's upstream and prunes the
    outbox). `outbox`, `limiter` and `clock` replace the ones the settings imply (tests)."""
    configure_event_log(settings.log_format)
    metrics = Metrics(settings.metrics_multiproc_dir)
    journal = Journal() if settings.admin_token else None
    observer = Observer(metrics, journal, clock)
    outbox = outbox if outbox is not None else open_outbox(settings.database, receives=receive)
    parts = Parts(settings, outbox, metrics, observer, clock, journal=journal,
                  shutdown_timeout=shutdown_timeout)
    if forward:
        parts.forwarder = Forwarder(
            settings,
            outbox,
            Upstream(forwarding_client(), settings.upstream_timeout_seconds),
            clock=clock,
            pacer=open_pacer(settings.database, outbox),
            on_settled=observer.settled,
        )
    if receive:
        if limiter is None:  # several workers on one SQLite file share the file's limiter
            limiter = open_limiter(settings.database, clock, shared=settings.workers > 1)
        parts.limiter = limiter
        parts.intake = Intake(
            parts.limiter,
            outbox,
            report=observer.received,
            wake=parts.forwarder.wake if parts.forwarder else lambda space_id: None,
            clock=clock,
        )
    return parts
