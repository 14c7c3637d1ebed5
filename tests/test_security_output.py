"""Security: what a sender chooses cannot grow /metrics, forge a log line, or drive a terminal.

Field names, event ids and keys are the sender's to choose, and they reach the metrics'
labels, the event log (text and JSON), and `comet-relay outbox tail` and `outbox dead`.
Against real relays over real sockets, and the CLI's own formatting.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from relay.cli.outbox import format_change, format_dead
from relay.observe.shown import shown
from relay.store.base import Change, DeadEvent
from tests.support import RelayProcess, Space, wait_for, write_config

ORIGIN = "https://acme.example"
FORGED_LINE = "2026-12-02 13:00:00,000 WARNING relay.events: dead event x (outbox 1) HTTP 401"


def browser(relay: RelayProcess, events: list[dict[str, object]], client: str) -> httpx.Response:
    return httpx.post(
        f"{relay.url}/e?k=pk_acme",
        content=json.dumps({"e": events}),
        headers={"Origin": ORIGIN, "Content-Type": "text/plain", "X-Forwarded-For": client},
        timeout=10,
    )


def series(relay: RelayProcess) -> int:
    text = httpx.get(f"{relay.url}/metrics", timeout=10).text
    return sum(1 for line in text.splitlines() if line.startswith("comet_events_received_total"))


def test_refused_field_names_do_not_grow_the_metrics(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space()], relay_extra="browser_rate_limit_per_minute = 100000")
    with RelayProcess(config) as relay:
        browser(relay, [{"event_name": "purchase", "nonsense": 1}], "198.51.100.1")
        before = series(relay)
        for request in range(60):  # 3,000 refused events, each with a field of its own
            sent = [{"event_name": "purchase", f"f{request}_{i}": 1} for i in range(50)]
            assert browser(relay, sent, "198.51.100.1").json()["refused"]
        after = series(relay)
        assert after == before, f"{after - before} new series from refused field names"
        text = httpx.get(f"{relay.url}/metrics", timeout=10).text
        assert 'reason="unknown_field"' in text and "f59_49" not in text


def test_an_event_id_cannot_forge_a_log_line_or_a_terminal_command(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space()], relay_extra="browser_rate_limit_per_minute = 100000")
    ids = [
        f"x\n{FORGED_LINE}",
        "x\x1b]0;owned\x07\x1b[2J",
        "x\u202egnp.exe",
        "y" * 60_000,
    ]
    with RelayProcess(config) as relay:
        for n, event_id in enumerate(ids):  # each refused: an amount that is no number
            sent = [{"event_name": "purchase", "event_id": event_id, "amount": "free"}]
            assert browser(relay, sent, f"198.51.100.{n + 10}").json()["refused"]
        wait_for(lambda: relay.log.read_text().count("refused browser event") >= 4, 10,
                 "four refusals in the log")
        log = relay.log.read_text()
    lines = log.splitlines()
    assert not any(line.startswith(FORGED_LINE) for line in lines)
    assert "x\\n2026-12-02" in log  # the newline is shown, escaped, on the refusal's own line
    assert "\x1b" not in log and "\u202e" not in log
    assert "\\x1b]0;owned\\x07" in log and "\\u202egnp.exe" in log
    assert max(len(line) for line in lines) < 2000  # 60 KB of id is cut


def test_the_json_log_escapes_and_bounds_the_same(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [Space()],
        relay_extra='browser_rate_limit_per_minute = 100000\nlog_format = "json"',
    )
    with RelayProcess(config) as relay:
        for n, event_id in enumerate([f"x\n{FORGED_LINE}", "z" * 60_000]):
            sent = [{"event_name": "purchase", "event_id": event_id, "amount": "free"}]
            browser(relay, sent, f"198.51.100.{n + 20}")
        wait_for(lambda: relay.log.read_text().count('"outcome": "rejected"') >= 2, 10,
                 "two refusals in the log")
        log = relay.log.read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [r for r in records if r.get("outcome") == "rejected"]
    assert len(refused) == 2
    assert all(len(json.dumps(r)) < 2000 for r in refused)
    assert refused[0]["event_id"].startswith("x\\n2026")


def test_outbox_tail_and_dead_show_keys_and_messages_escaped() -> None:
    key = "k\x1b[31mred\x1b[0m\nnext"
    change = Change(time.time(), 1, "acme", "purchase", key, "dead", 3, 422, "bad\x07\x1b]2;t\x07")
    line = format_change(change)
    dead = format_dead([DeadEvent(1, "acme", "purchase", key, 3, 422, "m\x1b[2J", 0.0, 0.0)])
    for text in (line, dead):
        assert "\x1b" not in text and "\x07" not in text
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)
    assert "\n" not in line and "k\\x1b[31mred" in line
    assert len(shown("a" * 10_000)) < 300


def test_an_error_answer_is_never_much_larger_than_the_body(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space()], relay_extra="browser_rate_limit_per_minute = 100000")
    with RelayProcess(config) as relay:
        api = {"event_name": "purchase", **{f"bogus_field_{n:04d}": n for n in range(2000)}}
        body = json.dumps(api).encode()
        r = httpx.post(f"{relay.url}/public-api/v1/events/track", content=body, timeout=10,
                       headers={"Authorization": "Bearer key-acme-write"})
        assert r.status_code == 422 and len(r.content) < len(body) // 2
        sent = [{"event_name": "purchase", **{f"b{n:03d}": 1 for n in range(60)}}] * 50
        raw = json.dumps({"e": sent}).encode()
        answer = browser(relay, sent, "198.51.100.99")
        # 5 problems of each of 50 events: of the order of the body, never ten times it
        assert answer.status_code == 202 and len(answer.content) < 2 * len(raw)
