"""What happens to events, reported once and fanned out to the metrics and the event log.

The handlers (`CreateEvent.on_received`, `Collect.on_received`) and the forwarder
(`Forwarder.on_settled`, in `serve` and in `comet-relay forward` alike) call an `Observer`;
it counts every report in `relay.metrics` and writes one log line per notable one (refused,
duplicate, bot, delivered, retrying, paused, dead; not accepted: that would be a line per
request) to the `relay.events` logger, as text or, with `[relay] log_format = "json"`, as one
JSON object per line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

from relay.journal import Journal
from relay.metrics import Metrics
from relay.store.base import Claimed
from relay.upstream import Outcome

log = logging.getLogger("relay.events")

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update((k, v) for k, v in record.__dict__.items() if k not in _RESERVED)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The event log's own handler, so configuring it again replaces it."""


def configure_event_log(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send `relay.events` at INFO to `stream` (stderr) as "text" or "json" lines; idempotent."""
    for old in [h for h in log.handlers if isinstance(h, _Handler)]:
        log.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the serve command configures no root handler; no double lines
    return handler


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

    def api(self, space: str, outcome: str, reason: str, key: str | None) -> None:
        """A report of the Create Event endpoint (see `CreateEvent.on_received`)."""
        self._received("api", space, outcome, reason, key)

    def browser(self, space: str, outcome: str, reason: str, key: str | None) -> None:
        """A report of the collect endpoint (see `Collect.on_received`)."""
        self._received("browser", space, outcome, reason, key)

    def _received(self, source: str, space: str, outcome: str, reason: str, key: str | None) -> None:
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
