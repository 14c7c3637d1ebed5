"""The one path from a request to the outbox, shared by both endpoints.

    route (HTTP) ─> Intake.take ─> (the route reads the body) ─> Intake.accept ─> 202
                    rate limit                                   check, enqueue,
                    429 / 503                                    report, wake the forwarder

The Create Event API (`relay.routes.track`) and the browser's endpoint
(`relay.routes.collect`) only translate HTTP to these calls and their results back to HTTP;
each refusal they meet on the way is reported here too (`Intake.refused`), so every event the
relay is sent is counted once, whichever door it came through. Nothing here knows HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.errors import Invalid, RateLimited, Refused, ServiceUnavailable, Unavailable
from relay.limits.base import Decision, RateLimiter
from relay.observe.observer import Received
from relay.rules.events import NewEvent, Source, new_event
from relay.rules.validate import summary
from relay.settings import Space
from relay.store.base import Enqueued, Outbox, Outcome

Report = Callable[[Received], None]
# Check one sent event (a decoded JSON value): (the event ready for the outbox, every problem
# by field).
Check = Callable[[Any], tuple[dict[str, object], dict[str, list[str]]]]

UNKNOWN_SPACE = "-"  # the Space of a refusal that came before the Space was known
_REASONS = {
    401: "auth", 403: "auth", 408: "timeout", 413: "too_large", 429: "rate_limit", 503: "unavailable"
}


def refusal_reason(err: Refused) -> str:
    """The `reason` of a refused request: its first refused field, else the kind of refusal."""
    if err.errors:
        return next(iter(err.errors))
    return _REASONS.get(err.status, "body")


@dataclass(frozen=True)
class Refusal:
    """One event of a batch refused on its own; the rest of the batch goes on."""

    index: int
    event_id: str | None
    errors: dict[str, list[str]]


@dataclass(slots=True)
class Accepted:
    """What became of the events of one request that passed the checks."""

    entries: list[NewEvent] = field(default_factory=list)
    results: list[Enqueued] = field(default_factory=list)  # per entry
    refused: list[Refusal] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)


@dataclass
class Intake:
    """Rate-limits, checks, enqueues and reports the events of both endpoints.

    `report` receives every outcome (see `Report`); `wake(space_id)` is told when a Space has
    something new queued, so an idle forwarder starts at once.
    """

    limiter: RateLimiter
    outbox: Outbox
    report: Report
    wake: Callable[[str], None] = lambda space_id: None
    clock: Callable[[], float] = time.time

    async def take(self, bucket: str, limit: int, over: str, cost: int = 1) -> Decision:
        """Spend `cost` of `bucket`'s allowance of `limit` a minute.

        Raises `RateLimited` (429, its message `over` followed by when to retry, its headers
        the decision's) when that much is not left, and `ServiceUnavailable` (503) when the
        limiter's store cannot be reached.
        """
        decision = await self._decide(self.limiter.take(bucket, limit, cost))
        if not decision.allowed:
            raise RateLimited(
                f"{over}; retry after {decision.retry_after} s.", headers=decision.headers()
            )
        return decision

    async def peek(self, bucket: str, limit: int) -> Decision:
        """What `take` would decide, spending nothing (for the headers of a refusal)."""
        return await self._decide(self.limiter.peek(bucket, limit))

    @staticmethod
    async def _decide(decided: object) -> Decision:
        try:
            return await decided  # type: ignore[no-any-return, misc]
        except Unavailable as exc:
            raise ServiceUnavailable(
                "The rate limiter's store could not be reached; retry the request."
            ) from exc

    async def accept(
        self,
        space: Space,
        source: Source,
        sent: Sequence[object],
        check: Check,
        *,
        whole: bool = False,
    ) -> Accepted:
        """Check each sent event, make the valid ones durable, report each outcome.

        Returns only after the commit is on disk. With `whole` (the Create Event API) one
        problem refuses the request: `Invalid` (422) listing every problem, nothing stored.
        Otherwise (the browser's batch) each event stands on its own, and the refused ones are
        listed in the result. The store failing raises `ServiceUnavailable` (503): nothing
        was accepted.
        """
        now = self.clock()
        accepted = Accepted()
        for index, item in enumerate(sent):
            event, errors = check(item)
            if errors and whole:
                raise Invalid(summary(errors), errors=errors)
            if errors:
                shown = event_id(item)
                accepted.refused.append(Refusal(index, shown, errors))
                reason = next(iter(errors), "body")
                self.report(Received(source, space.id, "rejected", reason, shown))
            else:
                accepted.entries.append(new_event(space, event, now, source))
        if accepted.entries:
            try:
                accepted.results = await self.outbox.enqueue(accepted.entries, now)
            except Exception as exc:  # the store failed: nothing was acknowledged
                raise ServiceUnavailable(
                    "Nothing was accepted: the relay could not store the event; retry the request."
                ) from exc
        if any(r.outcome is not Outcome.DUPLICATE for r in accepted.results):
            self.wake(space.id)  # a new event, or a twin released at once
        for entry, result in zip(accepted.entries, accepted.results):
            self.report(_received(source, entry, result))
        return accepted

    def refused(self, source: Source, space_id: str, err: Refused) -> None:
        """Report a request refused as a whole (`space_id` is `UNKNOWN_SPACE` before the
        Space is known)."""
        self.report(Received(source, space_id, "rejected", refusal_reason(err)))

    def bots(self, source: Source, space_id: str, sent: Sequence[object]) -> None:
        """Report the events of a crawler's request, dropped without a word."""
        for item in sent:
            self.report(Received(source, space_id, "bot", key=event_id(item)))


_OUTCOMES = {Outcome.QUEUED: "accepted", Outcome.MERGED: "merged", Outcome.DUPLICATE: "duplicate"}


def _received(source: Source, entry: NewEvent, result: Enqueued) -> Received:
    held = entry.due_at if result.queued else None
    key = entry.idempotency_key
    return Received(source, entry.space, _OUTCOMES[result.outcome], "", key, result.other, held)


def event_id(sent: object) -> str | None:
    """The event id the snippet gave an event, if it is a string."""
    found = sent.get("event_id") if isinstance(sent, dict) else None
    return found if isinstance(found, str) else None
