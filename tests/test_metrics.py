"""GET /metrics after a scripted run: ingest through the app in-process, delivery for real."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from relay.app import create_app
from relay.observe.metrics import Metrics
from relay.settings import load
from tests.support import RelayProcess, Space, UpstreamProcess, wait_for, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
ORIGIN = {"Origin": "https://acme.example"}
TOKEN_ENV = {"ACME_TOKEN": "upstream-secret-token"}
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(seen: Samples, name: str, **labels: str) -> float:
    return seen.get((name, frozenset(labels.items())), 0.0)


def received(seen: Samples, source: str, outcome: str, reason: str = "", space: str = "acme") -> float:
    return value(seen, "comet_events_received_total", space=space, source=source,
                 outcome=outcome, reason=reason)


def space_depth(seen: Samples, space: str = "acme") -> float:
    """The Space's queue depth over both priorities."""
    return sum(
        value(seen, "comet_queue_depth", space=space, priority=priority)
        for priority in ("api_conversion", "browser_conversion", "page_view")
    )


def test_ingest_outcomes_are_counted_by_space_source_outcome_and_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, relay_extra="max_body_bytes = 2000")
    now = [1_800_000_000.0]
    app = create_app(load(str(config), os.environ), forward=False, clock=lambda: now[0])

    async def scenario() -> tuple[int, str, str]:
        await app.state.outbox.start()
        try:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as c:
                one = {"event_name": "purchase", "email": "a@b.c", "idempotency_key": "k-1"}
                assert (await c.post(PATH, json=one, headers=KEY)).status_code == 202
                assert (await c.post(PATH, json=one, headers=KEY)).status_code == 202  # duplicate
                bad = {"event_name": "purchase", "email": "a@b.c", "amount": "lots"}
                assert (await c.post(PATH, json=bad, headers=KEY)).status_code == 422
                wrong = {"Authorization": "Bearer nope"}
                assert (await c.post(PATH, json=one, headers=wrong)).status_code == 401
                big = {"event_name": "purchase", "email": "x" * 3000}
                assert (await c.post(PATH, json=big, headers=KEY)).status_code == 413

                batch = {"e": [
                    {"event_name": "view_content", "event_id": "b-1", "url": "https://acme.example/"},
                    {"event_name": "view_content", "event_id": "b-1", "url": "https://acme.example/"},
                    {"event_name": "purchase", "event_id": "b-2", "amount": "lots"},
                ]}
                r = await c.post("/e?k=pk_acme", json=batch, headers=ORIGIN)
                assert r.status_code == 202, r.text
                assert r.json()["accepted"] == 1 and r.json()["duplicates"] == 1
                foreign = {"Origin": "https://evil.example"}
                assert (await c.post("/e?k=pk_acme", json=batch, headers=foreign)).status_code == 403
                assert (await c.post("/e?k=pk_nope", json=batch, headers=ORIGIN)).status_code == 403
                r = await c.post("/e?k=pk_acme", json=batch, headers={**ORIGIN, "User-Agent": BOT})
                assert r.json()["bot"] is True
                assert (await c.get("/no/such/path")).status_code == 404
                now[0] += 90.0
                scrape = await c.get("/metrics")
        finally:
            await app.state.outbox.close()
        return scrape.status_code, scrape.headers["content-type"], scrape.text

    status, content_type, text = asyncio.run(scenario())
    assert status == 200 and content_type.startswith("text/plain")
    seen = samples(text)
    assert received(seen, "api", "accepted") == 1
    assert received(seen, "api", "duplicate") == 1
    assert received(seen, "api", "rejected", "amount") == 1
    assert received(seen, "api", "rejected", "auth", space="-") == 1
    assert received(seen, "api", "rejected", "too_large") == 1
    assert received(seen, "browser", "accepted") == 1
    assert received(seen, "browser", "duplicate") == 1
    assert received(seen, "browser", "rejected", "amount") == 1
    assert received(seen, "browser", "rejected", "origin") == 1
    assert received(seen, "browser", "rejected", "auth", space="-") == 1
    assert received(seen, "browser", "bot") == 3
    # queue depth read from the outbox at scrape time: one API event, one page view
    assert value(seen, "comet_queue_depth", space="acme", priority="api_conversion") == 1
    assert value(seen, "comet_queue_depth", space="acme", priority="page_view") == 1
    assert value(seen, "comet_outbox_events", space="acme", state="queued") == 2
    age = "comet_oldest_queued_age_seconds"
    assert value(seen, age, space="acme", priority="api_conversion") == 90.0
    assert value(seen, age, space="acme", priority="page_view") == 90.0
    # request latency per route template; unmatched paths are one label, not one per path
    assert value(seen, "comet_request_duration_seconds_count", route=PATH, method="POST") == 5
    assert value(seen, "comet_request_duration_seconds_count", route="/e", method="POST") == 4
    assert value(seen, "comet_request_duration_seconds_count", route="other", method="GET") == 1


def test_multiprocess_mode_sums_the_counters_of_every_process(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, a scrape reads every worker's files, not one registry."""
    directory = tmp_path / "prom"
    directory.mkdir()
    # what another worker wrote: a file of the same format in the shared directory
    other = MmapedDict(str(directory / "counter_99999.db"))
    key = mmap_key(
        "comet_events_received_total", "comet_events_received_total",
        ["space", "source", "outcome", "reason"], ["acme", "api", "accepted", ""], "",
    )
    other.write_value(key, 7.0, 0.0)
    other.close()
    text = Metrics(str(directory)).render(None).decode()
    assert received(samples(text), "api", "accepted") == 7


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path) as up:
        yield up


def test_deliveries_retries_and_dead_letters_by_status(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(
        script=[{"status": 503, "message": "busy"}, {"status": 422, "message": "blocked"}],
        default={"status": 202},
    )
    config = write_config(tmp_path, relay_extra="upstream_timeout_seconds = 2", spaces=[Space(
        extra=f'upstream_url = "{upstream.track_url}"\nupstream_token_env = "ACME_TOKEN"\n'
    )])
    with RelayProcess(config, env=TOKEN_ENV) as relay, httpx.Client(base_url=relay.url) as c:
        for i in range(3):
            event = {"event_name": "purchase", "email": "a@b.c", "idempotency_key": f"d-{i}"}
            assert c.post(PATH, json=event, headers=KEY).status_code == 202

        def settled() -> Samples | None:
            seen = samples(c.get("/metrics").text)
            done = value(seen, "comet_deliveries_total", space="acme", status="202") >= 2
            done = done and (space_depth(seen) == 0)
            return seen if done else None

        seen = wait_for(settled, 20, "two deliveries after a retry and a dead letter")
        log = relay.log.read_text()
    # the event log: one line per notable step, with the event's idempotency key (which event
    # meets the 503 and which the 422 depends on how the retry's backoff falls)
    retried = re.search(r"retrying event (d-\d)\b.*HTTP 503 busy", log)
    dead = re.search(r"dead event (d-\d)\b.*HTTP 422 blocked", log)
    assert retried and dead, log
    delivered = set(re.findall(r"delivered event (d-\d)\b", log))
    assert delivered == {"d-0", "d-1", "d-2"} - {dead.group(1)}
    assert value(seen, "comet_deliveries_total", space="acme", status="503") == 1
    assert value(seen, "comet_deliveries_total", space="acme", status="422") == 1
    assert value(seen, "comet_retries_total", space="acme") == 1
    assert value(seen, "comet_dead_letters_total", space="acme") == 1
    assert value(seen, "comet_upstream_duration_seconds_count", space="acme") == 4
    assert value(seen, "comet_outbox_events", space="acme", state="dead") == 1
    assert space_depth(seen) == 0
    assert not [name for name, _ in seen if name == "comet_oldest_queued_age_seconds"]
