"""The event log: one line per notable event, with its ids, as text or as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.app import create_app
from relay.delivery.space_state import Start
from relay.delivery.upstream import Outcome, Verdict
from relay.errors import ConfigError
from relay.observe.eventlog import configure_event_log, log, write_event
from relay.observe.journal import Journal
from relay.observe.metrics import Metrics
from relay.observe.observer import Observer
from relay.settings import load
from relay.store.base import Claimed
from tests.support import write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}


def run(tmp_path: Path, log_format: str) -> str:
    config = write_config(tmp_path, relay_extra=f'log_format = "{log_format}"')
    app = create_app(load(str(config), os.environ), forward=False)
    out = io.StringIO()
    configure_event_log(app.state.settings.log_format, out)

    async def scenario() -> None:
        await app.state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
                one = {"event_name": "purchase", "email": "a@b.c", "idempotency_key": "k-1"}
                await c.post(PATH, json=one, headers=KEY)  # accepted: no line
                await c.post(PATH, json=one, headers=KEY)  # duplicate
                await c.post(PATH, json={**one, "amount": "x", "idempotency_key": "k-2"}, headers=KEY)
        finally:
            await app.state.outbox.close()

    asyncio.run(scenario())
    return out.getvalue()


@pytest.fixture(autouse=True)
def restore_event_log() -> object:
    yield
    configure_event_log("text")


def test_json_lines_carry_the_ids_and_the_outcome(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in run(tmp_path, "json").splitlines()]
    assert [(x["outcome"], x["event_id"], x["space"]) for x in lines] == [
        ("duplicate", "k-1", "acme"),
        ("rejected", None, "acme"),
    ]
    assert lines[1]["reason"] == "amount" and lines[1]["source"] == "api"
    assert lines[0]["logger"] == "relay.events" and lines[0]["level"] == "info"


def test_text_lines_by_default(tmp_path: Path) -> None:
    text = run(tmp_path, "text")
    assert "duplicate api event k-1 of Space acme" in text
    assert "refused api event - of Space acme: amount" in text
    assert log.level == logging.INFO


def test_log_format_is_checked(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra='log_format = "xml"')
    with pytest.raises(ConfigError, match='log_format: must be "text" or "json"'):
        load(str(config), os.environ)


EXTRA = {"space": "acme", "outcome": "dead", "event_id": "k-ü", "outbox_id": 7,
         "upstream_status": None, "next_attempt_at": 1_800_000_000.25, "slot": 1.5}
CREATED = 1_800_000_000.987654


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_event_line_is_the_line_logging_would_write(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`write_event` skips `logging`'s records (they cost as much as a delivery), not a
    character of the line."""
    out = io.StringIO()
    handler = configure_event_log(log_format, out)
    monkeypatch.setattr(log, "handlers", [handler])  # without pytest's own capturing handlers
    with monkeypatch.context() as no_records:
        no_records.setattr(logging.LogRecord, "__init__", None)  # making one would fail
        write_event(logging.WARNING, "dead event k-ü (outbox 7) of Space acme: HTTP 422 no",
                    EXTRA, created=CREATED)
    record = log.makeRecord(log.name, logging.WARNING, __file__, 1, "%s",
                            ("dead event k-ü (outbox 7) of Space acme: HTTP 422 no",), None,
                            extra=EXTRA)
    record.created, record.msecs = CREATED, 987.0
    assert out.getvalue() == handler.format(record) + "\n"
    if log_format == "json":
        line = json.loads(out.getvalue())
        assert line["time"] == "2027-01-15T08:00:00.987Z" and line["level"] == "warning"
        assert (line["event_id"], line["slot"], line["pid"]) == ("k-ü", 1.5, os.getpid())


@contextlib.contextmanager
def another_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[io.StringIO, list[logging.LogRecord]]]:
    """The JSON event log's output, and the records a handler added beside it (as code that
    embeds the relay may add) sees while the block runs."""
    out = io.StringIO()
    handler = configure_event_log("json", out)
    monkeypatch.setattr(log, "handlers", [handler])  # without pytest's own capturing handlers
    seen: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = seen.append  # type: ignore[method-assign]
    log.addHandler(other)
    try:
        yield out, seen
    finally:
        log.removeHandler(other)


def test_other_handlers_and_filters_still_see_every_event_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with another_handler(monkeypatch) as (out, seen):
        write_event(logging.INFO, "delivered event k-1", {"event_id": "k-1"})
        assert [r.getMessage() for r in seen] == ["delivered event k-1"]
        assert seen[0].event_id == "k-1"  # type: ignore[attr-defined]
        assert json.loads(out.getvalue())["event_id"] == "k-1"
    quiet = logging.Filter("someone.else")  # lets no record of relay.events through
    log.addFilter(quiet)
    try:
        write_event(logging.INFO, "delivered event k-2", {"event_id": "k-2"})
    finally:
        log.removeFilter(quiet)
    log.setLevel(logging.WARNING)
    write_event(logging.INFO, "delivered event k-3", {"event_id": "k-3"})
    assert len(out.getvalue().splitlines()) == 1


def test_a_broken_stream_does_not_break_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk or a closed stderr costs the line, as with logging, not the delivery."""

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    handler = configure_event_log("json", Full())
    monkeypatch.setattr(log, "handlers", [handler])  # without pytest's own capturing handlers
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    write_event(logging.INFO, "delivered event k-1", {"event_id": "k-1"})
    assert [r.getMessage() for r in reported] == ["delivered event k-1"]


def test_a_forwarder_report_is_stamped_when_the_answer_came(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliveries are told at their mark's flush, up to a quarter second after the answer:
    the line and the debugger's sighting carry the answer's time, `start.at + seconds`."""
    out = io.StringIO()
    handler = configure_event_log("json", out)
    monkeypatch.setattr(log, "handlers", [handler])  # without pytest's own capturing handlers
    journal = Journal()
    observer = Observer(Metrics(), journal, clock=lambda: CREATED + 100.0)  # told much later
    event = Claimed(id=7, space="acme", event_name="purchase", idempotency_key="k-1",
                    payload=b"{}", attempts=0, received_at=CREATED - 10, lease_until=CREATED + 30)
    outcome = Outcome(Verdict.DELIVERED, 202, "ok")
    observer.settled(event, "delivered", outcome, 0.5, None, Start(CREATED - 1.0, CREATED - 0.5))
    line = json.loads(out.getvalue())
    assert line["time"] == "2027-01-15T08:00:00.987Z"
    assert line["started_at"] == CREATED - 0.5
    assert [s.at for s in journal.ring] == [CREATED]


def test_a_line_handed_to_logging_keeps_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """With another handler on the event log (code that embeds the relay), a delivery told at
    its mark's flush still carries the time its answer came."""
    with another_handler(monkeypatch) as (out, seen):
        write_event(logging.INFO, "delivered event k-1", {"event_id": "k-1"}, created=CREATED)
    assert [r.created for r in seen] == [CREATED]
    assert json.loads(out.getvalue())["time"] == "2027-01-15T08:00:00.987Z"
