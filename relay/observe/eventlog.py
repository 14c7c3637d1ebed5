"""The event log: the `relay.events` logger, written as text or as one JSON object per line.

`configure_event_log` sends it to stderr (or a given stream) at INFO, in the format of
`[relay] log_format`; the `Observer` writes to it with `write_event`.

`write_event` writes the very line `log.log` would, without a `logging.LogRecord`, while the
event log is as `configure_event_log` set it up (its one handler, no filters); otherwise it
hands the line to `log.log`, so any other handler or filter someone adds sees every event.
The forwarder writes a line per delivered event: through `logging`'s records, its caller
lookup and its handler chain that line cost about as much CPU as the delivery's HTTP
(bench/README.md, issue 16).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import NamedTuple, TextIO

log = logging.getLogger("relay.events")

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# One encoder for every line: json.dumps with options makes (and drops) one per call.
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


class _Stamp(NamedTuple):
    """What `logging.Formatter.formatTime` reads of a record."""

    created: float
    msecs: float


def _stamp(created: float) -> _Stamp:
    return _Stamp(created, int((created - int(created)) * 1000) + 0.0)  # as LogRecord does


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the process id and the
    record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line = _fields(record.created, record.msecs, record.levelname, record.name,
                       record.getMessage(), record.process)
        line.update((k, v) for k, v in record.__dict__.items() if k not in _RESERVED)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line)

    def event_line(self, created: float, level: int, message: str, extra: Mapping[str, object]) -> str:
        """The line `format` makes of an event-log record with these fields."""
        stamp = _stamp(created)
        line = _fields(created, stamp.msecs, logging.getLevelName(level), log.name, message,
                       os.getpid())
        line.update(extra)
        return _encode(line)


def _fields(created: float, msecs: float, level: str, logger: str, message: str,
            pid: int | None) -> dict[str, object]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z",
        "level": level.lower(),
        "logger": logger,
        "message": message,
        "pid": pid,  # which worker of `serve --workers N`
    }


class TextFormatter(logging.Formatter):
    """`time level logger: message`, the time in local time with milliseconds."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def event_line(self, created: float, level: int, message: str, extra: Mapping[str, object]) -> str:
        """The line `format` makes of an event-log record with these fields."""
        when = self.formatTime(_stamp(created))  # type: ignore[arg-type]  # reads two fields
        return f"{when} {logging.getLevelName(level)} {log.name}: {message}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The event log's own handler, so configuring it again replaces it."""


_handler: _Handler | None = None  # the handler `configure_event_log` added last


def configure_event_log(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send `relay.events` at INFO to `stream` (stderr) as "text" or "json" lines; idempotent."""
    global _handler
    for old in [h for h in log.handlers if isinstance(h, _Handler)]:
        log.removeHandler(old)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the serve command configures no root handler; no double lines
    _handler = handler
    return handler


def write_event(level: int, message: str, extra: Mapping[str, object],
                created: float | None = None) -> None:
    """Write one event line at `level`: `message` (already formatted) and the fields `extra`,
    stamped `created` (now). The same line as `log.log(level, message, extra=extra)`."""
    handler = _handler
    created = time.time() if created is None else created
    if (
        handler is None
        or log.handlers != [handler]
        or log.filters
        or handler.filters
        or level < handler.level
        or not log.isEnabledFor(level)
        or not isinstance(handler.formatter, JsonFormatter | TextFormatter)
    ):
        _through_logging(level, message, extra, created)
        return
    line = handler.formatter.event_line(created, level, message, extra)
    with handler.lock:  # type: ignore[union-attr]  # a StreamHandler has its lock
        try:
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except (OSError, ValueError):  # a broken or closed stream must not break delivery
            handler.handleError(logging.makeLogRecord({"msg": message, "levelno": level}))


def _through_logging(level: int, message: str, extra: Mapping[str, object], created: float) -> None:
    """The line as a `logging.LogRecord` stamped `created`, for every handler and filter."""
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(log.name, level, "(event log)", 0, "%s", (message,), None,
                            extra=dict(extra))
    record.created, record.msecs = created, _stamp(created).msecs
    log.handle(record)
