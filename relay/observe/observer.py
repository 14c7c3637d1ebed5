"""What happens to events, reported once and fanned out to the metrics and the event log.

The intake (`relay.intake.Intake`, for both endpoints) and the forwarder (`Forwarder`, in
`serve` and in `comet-relay forward` alike) report to an `Observer`; it counts every report
in `relay.observe.metrics` and writes one log line per notable one (refused,
duplicate, bot, delivered, retrying, paused, dead; not accepted: that would be a line per
request) to the `relay.events` logger (`write_event`), as text or, with `[relay] log_format = "json"`, as one
JSON object per line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import INFO, WARNING

from relay.delivery.space_state import Start
from relay.delivery.upstream import Outcome
from relay.observe.eventlog import write_event
from relay.observe.journal import Journal
from relay.observe.metrics import Metrics
from relay.observe.shown import shown
from relay.rules.events import Source
from relay.store.base import Claimed


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 8 times as much, per event
class Received:
    """What became of one event the relay was sent, for the metrics, the event log and the
    debugger. `outcome` is "accepted", "merged" (with its twin from the other source),
    "duplicate", "bot" or "rejected" (`reason` says why); `other` is the key of the event it
    merged with or duplicates; `held_until`, when an accepted conversion waits for its twin."""

    source: Source
    space: str
    outcome: str
    reason: str = ""
    key: str | None = None
    other: str | None = None
    held_until: float | None = None


_STAGES = {"accepted": "queued", "rejected": "refused"}


class Observer:
    """Receives every report of the handlers and the forwarder."""

    def __init__(
        self,
        metrics: Metrics,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.journal = journal  # the debugger's, when it is enabled
        self.clock = clock

    def received(self, r: Received) -> None:
        """A report of the intake (see `relay.intake.Received`). In the debugger's ledger a
        held conversion shows its hold, a merge both keys, and the browser event an API
        event took over as "superseded"."""
        self.metrics.event(r.source, r.space, r.outcome, r.reason)
        if self.journal is not None:
            now = self.clock()
            stage = _STAGES.get(r.outcome, r.outcome)
            if r.held_until is not None and r.held_until > now:
                stage = "held"
            detail = f"with {r.other}" if r.outcome == "merged" else r.reason
            self.journal.add(now, r.space, r.source, stage, r.key, reason=detail,
                             next_at=r.held_until)
            if r.outcome == "merged" and r.source == "api":
                self.journal.add(now, r.space, "browser", "superseded", r.other,
                                 reason=f"by API event {r.key}, with its fields")
        if r.outcome == "accepted":
            return
        event_id = None if r.key is None else shown(r.key)
        key, other, reason = event_id or "-", shown(r.other), shown(r.reason)
        extra = {"space": r.space, "source": r.source, "outcome": r.outcome, "event_id": event_id}
        if r.outcome == "rejected":
            extra["reason"] = reason
            write_event(INFO, f"refused {r.source} event {key} of Space {r.space}: {reason}", extra)
        elif r.other is not None:
            extra["other_event_id"] = other
            write_event(INFO, f"{r.outcome} {r.source} event {key} of Space {r.space} ({other})",
                        extra)
        else:
            write_event(INFO, f"{r.outcome} {r.source} event {key} of Space {r.space}", extra)

    def settled(
        self,
        event: Claimed,
        state: str,
        outcome: Outcome,
        seconds: float,
        next_at: float | None,
        start: Start,
    ) -> None:
        """A report of the forwarder (see `Forwarder.on_settled`), stamped with when the
        answer came (a delivery is told a little later). The log line carries when the request
        was started and the pacer's slot for it (`started_at`, `slot`)."""
        self.metrics.settled(event.space, state, outcome.status, seconds)
        answered = start.at + seconds
        if self.journal is not None:
            self.journal.add(
                answered, event.space, "forwarder", state, event.idempotency_key,
                reason=outcome.message, status=outcome.status, outbox_id=event.id,
                event_name=event.event_name, next_at=next_at,
            )
        key, message = shown(event.idempotency_key), shown(outcome.message)
        extra = {
            "space": event.space,
            "outcome": state,
            "event_id": key,
            "outbox_id": event.id,
            "upstream_status": outcome.status,
            "upstream_message": message,
            "attempts": event.attempts + 1,
            "next_attempt_at": next_at,
            "started_at": start.at,
            "slot": start.slot,
        }
        level = INFO if state in ("delivered", "retrying") else WARNING
        write_event(level, f"{state} event {key} (outbox {event.id:d}) of Space {event.space}: "
                    f"HTTP {outcome.status or '-'} {message}", extra, answered)
