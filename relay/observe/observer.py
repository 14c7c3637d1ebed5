"""What happens to events, reported once and fanned out to the metrics and the event log.

The intake (`relay.intake.Intake`, for both endpoints) and the forwarder (`Forwarder`, in
`serve` and in `comet-relay forward` alike) report to an `Observer`; it counts every report
in `relay.observe.metrics` and writes one log line per notable one (refused,
duplicate, bot, delivered, retrying, paused, dead; not accepted: that would be a line per
request) to the `relay.events` logger, as text or, with `[relay] log_format = "json"`, as one
JSON object per line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from relay.delivery.upstream import Outcome
from relay.observe.eventlog import log
from relay.observe.journal import Journal
from relay.observe.metrics import Metrics
from relay.store.base import Claimed

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

    def received(self, source: str, space: str, outcome: str, reason: str, key: str | None) -> None:
        """A report of the intake (see `relay.intake.Report`)."""
        self.metrics.event(source, space, outcome, reason)
        if self.journal is not None:
            stage = _STAGES.get(outcome, outcome)
            self.journal.add(self.clock(), space, source, stage, key, reason=reason)
        if outcome == "accepted":
            return
        extra = {"space": space, "source": source, "outcome": outcome, "event_id": key}
        if outcome == "rejected":
            extra["reason"] = reason
            log.info("refused %s event %s of Space %s: %s", source, key or "-", space, reason,
                     extra=extra)
        else:
            log.info("%s %s event %s of Space %s", outcome, source, key or "-", space, extra=extra)

    def settled(
        self, event: Claimed, state: str, outcome: Outcome, seconds: float, next_at: float | None
    ) -> None:
        """A report of the forwarder (see `Forwarder.on_settled`)."""
        self.metrics.settled(event.space, state, outcome.status, seconds)
        if self.journal is not None:
            self.journal.add(
                self.clock(), event.space, "forwarder", state, event.idempotency_key,
                reason=outcome.message, status=outcome.status, outbox_id=event.id,
                event_name=event.event_name, next_at=next_at,
            )
        extra = {
            "space": event.space,
            "outcome": state,
            "event_id": event.idempotency_key,
            "outbox_id": event.id,
            "upstream_status": outcome.status,
            "upstream_message": outcome.message,
            "attempts": event.attempts + 1,
            "next_attempt_at": next_at,
        }
        level = logging.INFO if state in ("delivered", "retrying") else logging.WARNING
        log.log(level, "%s event %s (outbox %d) of Space %s: HTTP %s %s", state,
                event.idempotency_key, event.id, event.space, outcome.status or "-",
                outcome.message, extra=extra)
