"""The forwarder: claim -> pace -> send -> delivered / retry later / dead, per Space.

Each Space with an `upstream_url` gets one loop. The loop starts requests no closer together
than 60 / upstream_rate_per_minute seconds (so no burst ever exceeds the rate, whatever the
backlog), keeps a few requests in flight so a slow upstream does not lower the rate, and claims
small batches just in time so a conversion accepted now overtakes queued page views.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from relay.delivery.pacing.base import Pacer
from relay.delivery.pacing.memory import MemoryPacer
from relay.delivery.space_state import (
    BACKOFF_CAP,
    SpaceState,
    Start,
    backoff,
    earliest_start,
    state_for,
)
from relay.delivery.upstream import Outcome, Upstream, Verdict
from relay.observe.shown import shown
from relay.settings import Settings
from relay.store.base import Claimed, Outbox

log = logging.getLogger("relay.forwarder")

PAUSE_FIRST = 5.0
# Event loops' timers may fire up to a millisecond early (uvloop counts whole milliseconds from
# the start of the loop's turn): the waits that must not end early (for a slot, a hold, the
# per-second cap) ask for this much more, so a start never precedes its slot, in one nap.
TIMER_SLACK = 0.002
# The longest nap that `stop` does not cut short: a plain sleep, a third of the CPU of a nap
# that also watches for the stop, and at 12,000/min every start naps a few milliseconds.
SHORT_NAP = 0.1
# Seconds of starts other forwarders of a Space may have reserved ahead that one forwarder
# reserves its batch behind, instead of waiting: four forwarders' batches of a quarter second.
# A longer wait is a hold (a 429, a pause, a backoff), waited out without claiming.
RESERVED_AHEAD = 1.0
# Seconds a delivered event may wait to be marked, with others. A kill inside it sends those
# events again (at-least-once); each flush is a commit in the writer thread, whose cost is per
# flush, not per event (bench/README.md, issue 16): 0.05 s cost about 20 commits a second.
# Delivered events are reported (`on_settled`) at their flush too, just before their mark.
DELIVERED_FLUSH = 0.25


# Told of every settled attempt: (event, state, upstream answer, seconds the request took,
# when it is due again, when it was started); state is "delivered", "retrying", "paused"
# (released, the Space waits) or "dead". Delivered attempts are told together, when their
# marks are flushed (DELIVERED_FLUSH) and before the marks are written: one burst of reports
# costs the observer a fraction of what it costs one at a time between requests (bench/
# README.md, issue 16), and a kill before the marks sends again exactly the events whose
# report was perhaps lost. A report's time is `start.at + seconds`, not when it is told.
Settled = Callable[[Claimed, str, Outcome, float, float | None, Start], None]


class Forwarder:
    """Delivers every queued event of every Space that has an upstream."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        upstream: Upstream,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
        concurrency: int = 16,
        idle_poll: float = 0.5,
        prune_every: float = 300.0,
        pacer: Pacer | None = None,
        on_settled: Settled | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.upstream = upstream
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.concurrency = concurrency
        self.idle_poll = idle_poll
        self.prune_every = prune_every
        self.pacer: Pacer = pacer if pacer is not None else MemoryPacer()
        # A lease covers a short wait in the buffer plus one request; a crashed forwarder's
        # events are claimed again once it runs out, so it is kept short.
        self.lease = 2 * settings.upstream_timeout_seconds + 5.0
        self.max_age = settings.max_event_age_hours * 3600.0
        self.states = {
            s.id: state_for(s) for s in settings.spaces.values() if s.upstream_url and s.active
        }
        self._stopping = asyncio.Event()
        self._stop_future: asyncio.Future[None] | None = None
        self._delivered: list[tuple[Claimed, Outcome, float, Start]] = []  # to mark and tell
        self._flush: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.on_settled: Settled = on_settled or (lambda *report: None)

    def paused(self) -> dict[str, float]:
        """Each Space with an upstream: until when its delivery is paused by a 401/403 (0: not)."""
        now = self.clock()
        return {
            sid: st.paused_until if st.paused_until > now else 0.0
            for sid, st in self.states.items()
        }

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start one loop per Space, and the pruner, on the running event loop."""
        self._loops = [asyncio.create_task(self._space_loop(st)) for st in self.states.values()]
        self._loops.append(asyncio.create_task(self._prune_loop()))

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, let requests in flight finish within `timeout`, release every lease."""
        self._stopping.set()
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)
        for st in self.states.values():
            st.wake.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        inflight = [t for st in self.states.values() for t in st.inflight]
        if inflight:
            _, pending = await asyncio.wait(inflight, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for st in self.states.values():
            await self._release_buffer(st)
        if self._flush is not None:
            await self._flush
        await self._flush_delivered()

    def wake(self, space_id: str) -> None:
        """Tell an idle Space loop that an event was just queued."""
        st = self.states.get(space_id)
        if st is not None:
            st.wake.set()

    # the loop --------------------------------------------------------------------------

    async def _space_loop(self, st: SpaceState) -> None:
        while not self._stopping.is_set():
            try:
                await self._step(st)
            except Exception:  # a store hiccup must not end delivery for good
                log.exception("forwarder step failed for Space %s; retrying", st.space.id)
                await self._nap(st, 1.0)

    async def _step(self, st: SpaceState) -> None:
        sid = st.space.id
        now = self.clock()
        if not st.slots:  # asked once per batch: a hold, a pause or a backoff shows here
            slot = max(await self.pacer.next_slot(sid), st.held_until)
            # Close to the slot, go on and reserve now: waking late for every request would
            # lose that lateness each time and drift below the configured rate. Close means
            # within one interval, or within RESERVED_AHEAD: the batches other forwarders of
            # the Space reserved, which this one takes its turn behind rather than wait out
            # (each would otherwise find the next slot taken, and one could starve the rest).
            # Not while this forwarder's own hold lasts: the pacer may not have stored it yet.
            ahead = RESERVED_AHEAD if st.held_until <= now else 0.0
            if slot - now > max(st.interval, ahead):  # a hold: wait for `slot`
                if slot - now > self.settings.upstream_timeout_seconds:
                    await self._release_buffer(st)  # long wait: do not sit on leases
                await self._nap(st, slot - now + TIMER_SLACK, wakeable=False)
                return
        if len(st.inflight) >= self.concurrency:  # (or the stop: an upstream may hang)
            await asyncio.wait((*st.inflight, self._stop_signal()),
                               return_when=asyncio.FIRST_COMPLETED)
            return
        event = await self._next_event(st, now)
        if event is None:
            due = await self.outbox.next_due(st.space.id)
            idle = self.idle_poll if due is None else min(self.idle_poll, max(0.0, due - now))
            await self._nap(st, idle)
            return
        if not st.slots:
            # The starts of the events in hand (up to a batch), reserved in one step after the
            # claim, so they stay spaced; with a shared pacer the Space's other forwarders may
            # hold the next slots.
            n = min(1 + len(st.buffer), st.batch)
            st.slots.extend(await self.pacer.reserve_batch(sid, st.interval, n, self.clock()))
        start = st.slots.popleft()
        now = self.clock()
        earliest = earliest_start(st, start, now)
        wait = earliest - now
        # The lease must outlast the wait and the request, or another forwarder could claim
        # the event meanwhile and send it too.
        if wait > self.settings.upstream_timeout_seconds or (
            event.lease_until < earliest + self.settings.upstream_timeout_seconds + 1.0
        ):
            st.buffer.appendleft(event)
            await self._release_buffer(st)
            return
        # One nap for the slot and the cap together (a nap is a wake-up of the loop, the
        # largest part of what a start costs). uvloop's timers may fire early (whole ms, from
        # a stale loop time): nap past it, and look again.
        while wait > 0:
            holds = st.holds
            await self._nap(st, wait + TIMER_SLACK, wakeable=False)  # never before the slot
            if self._stopping.is_set() or st.holds != holds:  # stopping, or held meanwhile
                st.buffer.appendleft(event)  # released by stop(), or sent after the hold
                return
            now = self.clock()
            wait = earliest_start(st, start, now) - now
        at = self.clock()
        st.starts.append(at)
        task = asyncio.create_task(self._deliver(st, event, Start(start, at)))
        st.inflight.add(task)
        task.add_done_callback(st.inflight.discard)

    async def _next_event(self, st: SpaceState, now: float) -> Claimed | None:
        # An event may only be sent while its lease outlasts the request: otherwise another
        # forwarder could claim it meanwhile and send it too.
        need = self.settings.upstream_timeout_seconds + 1.0
        if st.buffer and st.buffer[0].lease_until - now < need:
            await self._release_buffer(st)
        if not st.buffer:
            st.buffer.extend(await self.outbox.claim(st.space.id, st.batch, self.lease, now))
        return st.buffer.popleft() if st.buffer else None

    async def _nap(self, st: SpaceState, seconds: float, wakeable: bool = True) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if not wakeable:
            await self._pause(seconds)  # every start
            return
        st.wake.clear()
        await _first(self.sleep(seconds), st.wake.wait(), self._stopping.wait())

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds` or until `stop` begins (a nap of up to SHORT_NAP: `seconds`)."""
        if self.sleep is asyncio.sleep:  # the real clock: one timer, no task
            if seconds <= SHORT_NAP:
                await asyncio.sleep(seconds)
            else:
                await asyncio.wait((self._stop_signal(),), timeout=seconds)
        else:
            await _first(self.sleep(seconds), self._stopping.wait())

    def _stop_signal(self) -> asyncio.Future[None]:
        """A future that is done once `stop` began (made on the running loop when first asked)."""
        if self._stop_future is None:
            self._stop_future = asyncio.get_running_loop().create_future()
            if self._stopping.is_set():
                self._stop_future.set_result(None)
        return self._stop_future

    def _held(self, st: SpaceState, until: float) -> None:
        """The Space is held until `until`: the starts this forwarder reserved before are given
        up, and the hold counts here at once, before the pacer has stored it."""
        st.holds += 1
        st.held_until = max(st.held_until, until)
        st.slots.clear()

    # one delivery ----------------------------------------------------------------------

    async def _deliver(self, st: SpaceState, event: Claimed, start: Start) -> None:
        space = st.space
        assert space.upstream_url is not None  # only Spaces with an upstream have a loop
        started = time.perf_counter()
        try:
            outcome = await self.upstream.send(
                space.upstream_url, space.upstream_token, event.body(), self.clock()
            )
        except asyncio.CancelledError:
            await asyncio.shield(self.outbox.release([event.id]))
            raise
        await self._settle(st, event, outcome, start, time.perf_counter() - started)

    async def _settle(
        self, st: SpaceState, event: Claimed, outcome: Outcome, start: Start, seconds: float
    ) -> None:
        now = self.clock()
        sid = st.space.id
        if outcome.verdict is Verdict.DELIVERED:
            st.failures, st.pause = 0, 0.0
            st.sent += 1
            self._mark_delivered((event, outcome, seconds, start))
        elif outcome.verdict is Verdict.SLOW_DOWN:
            delay = outcome.delay if outcome.delay is not None else 60.0
            self._held(st, now + delay)
            await self.pacer.hold(sid, now + delay, now)
            log.warning("upstream asked Space %s to slow down for %.0f s", sid, delay)
            await self.outbox.retry(event.id, now + delay, outcome.status, outcome.message, now)
            self.on_settled(event, "retrying", outcome, seconds, now + delay, start)
        elif outcome.verdict is Verdict.PAUSE:
            await self.outbox.release([event.id])
            self.on_settled(event, "paused", outcome, seconds, None, start)
            if now < st.paused_until:
                return  # a request that was already in flight when the pause began
            st.pause = PAUSE_FIRST if st.pause == 0 else min(BACKOFF_CAP, st.pause * 2)
            st.paused_until = now + st.pause
            self._held(st, st.paused_until)
            await self.pacer.hold(sid, st.paused_until, now)
            log.error(
                "UPSTREAM REFUSED THE CREDENTIALS of Space %s (HTTP %s: %s); check upstream_url and "
                "the token in $%s. Delivery paused for %.0f s; no event is dropped.",
                sid, outcome.status, shown(outcome.message), st.space.upstream_token_env, st.pause,
            )
        elif outcome.verdict is Verdict.RETRY:
            st.failures += 1
            until = now + backoff(st.failures - 1, self.rng)
            self._held(st, until)
            await self.pacer.hold(sid, until, now)
            if now - event.received_at > self.max_age:
                reason = f"gave up after {event.attempts + 1} attempts: {outcome.message}"
                await self.outbox.dead(event.id, outcome.status, reason, now)
                dead = replace(outcome, message=reason)
                self.on_settled(event, "dead", dead, seconds, None, start)
            else:
                at = now + backoff(event.attempts, self.rng)
                await self.outbox.retry(event.id, at, outcome.status, outcome.message, now)
                self.on_settled(event, "retrying", outcome, seconds, at, start)
        else:
            log.warning("upstream refused event %s of Space %s for good: HTTP %s %s",
                        shown(event.idempotency_key), sid, outcome.status, shown(outcome.message))
            await self.outbox.dead(event.id, outcome.status, outcome.message, now)
            self.on_settled(event, "dead", outcome, seconds, None, start)

    def _mark_delivered(self, delivery: tuple[Claimed, Outcome, float, Start]) -> None:
        """Mark deliveries in small batches: one commit per DELIVERED_FLUSH, not per event.

        A crash inside that window sends those events again, which at-least-once allows.
        """
        self._delivered.append(delivery)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_delivered(DELIVERED_FLUSH))

    async def _flush_delivered(self, after: float = 0.0) -> None:
        # Loops until nothing is left: deliveries that finish while a write is under way
        # schedule no flush of their own, and must not wait for their leases to run out.
        while self._delivered:
            if after:
                await self._pause(after)
            done, self._delivered = self._delivered, []
            for event, outcome, seconds, start in done:  # told first: see `Settled`
                try:
                    self.on_settled(event, "delivered", outcome, seconds, None, start)
                except Exception:  # a report must not keep an event from its mark
                    log.exception("reporting delivered event %d failed", event.id)
            ids = [event.id for event, _, _, _ in done]
            try:
                await self.outbox.delivered(ids, self.clock())
            except Exception:  # their leases run out and they are sent again: at-least-once
                log.exception("could not mark %d delivered events; they will be sent again", len(ids))

    async def _release_buffer(self, st: SpaceState) -> None:
        st.slots.clear()  # reserved for these events: lost, as the pacer allows
        if st.buffer:
            ids = [e.id for e in st.buffer]
            st.buffer.clear()
            await self.outbox.release(ids)

    async def _prune_loop(self) -> None:
        keep = self.settings.delivered_retention_days * 86400.0
        while not self._stopping.is_set():
            try:
                now = self.clock()
                await self.outbox.prune(now - keep, now)
            except Exception:
                log.exception("pruning the outbox failed")
            await _first(self.sleep(self.prune_every), self._stopping.wait())


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
