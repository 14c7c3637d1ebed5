"""The event log: the `relay.events` logger, written as text or as one JSON object per line.

`configure_event_log` sends it to stderr (or a given stream) at INFO, in the format of
`[relay] log_format`; the `Observer` writes to it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("relay.events")

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the process id and the
    record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which worker of `serve --workers N`
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
