"""The short soak: mixed load, a failing upstream and SIGKILLs, on both backends (bench/soak.py).

About 24 s of load per backend with two SIGKILLs and every fault kind at least once (spells
of 500s, 429 with Retry-After, dropped connections and slow answers), twins (forged and real,
in both orders, and late) under a 2 s twin window, and a flood of forged purchases to each
Space. The long version is the documented command
`python -m bench.soak --backend sqlite|redis --seconds 300 --kills 6`; both hold the run
against the same promises (bench.soak.judge).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from bench.soak import FAULT_KINDS, Options, run_soak, summary
from tests.support import UpstreamProcess, wait_for

SHORT = Options(seconds=24.0, kills=2, flood_every=10.0)  # a flood to each Space


@pytest.fixture(params=["sqlite", "redis"])
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "relay.db"
    return str(request.getfixturevalue("redis_url"))


def test_short_soak_loses_nothing_duplicates_only_around_kills_and_keeps_the_rate(
    tmp_path: Path, database: str
) -> None:
    backend = "sqlite" if database == "relay.db" else "redis"
    report = run_soak(dataclasses.replace(SHORT, backend=backend), tmp_path, database)
    shown = summary(report)

    assert report["problems"] == [], shown
    assert report["run"]["kills"] >= 2, shown
    assert all(report["upstream"]["faults"].get(kind) for kind in FAULT_KINDS), shown
    assert report["lost"] == 0
    assert report["upstream_events"] == report["delivered"] + report["dead"], shown
    merged, dropped = report["merged"], report["twin_duplicates"]
    unsure = report["merged_or_duplicate"]
    assert report["accepted"] == report["upstream_events"] + merged + dropped + unsure, shown
    # twins met and merged; a flood went to each Space, and API conversions overtook it
    assert sum(p["merged"] for p in report["twins"]["pairs"].values()) > 0, shown
    floods = report["floods"]
    assert floods["floods"] >= 2, shown
    assert sum(f["api_conversions_ahead_of_queued_forged"] for f in floods["spaces"].values()), shown
    assert report["dead"] > 0 and report["refused"] > 0, shown  # both kinds of refusal were tried
    assert report["duplicates"]["sent"] == report["duplicates"]["replayed"] > 0, shown
    assert report["memory"]["flat"], shown


def test_the_fake_upstreams_schedule_match_and_hang_up_record(tmp_path: Path) -> None:
    with UpstreamProcess(tmp_path) as upstream:
        now = time.time()
        spells = [
            {"start": now - 1, "end": now + 60, "rule": {"delay": 1.0}},  # slow, then as usual
            {"start": now + 60, "end": now + 120, "rule": {"status": 500}},
        ]
        refuse = {"contains": "refuse-me", "rule": {"status": 422, "message": "no"}}
        body = {"schedule": spells, "match": [refuse]}
        httpx.post(f"{upstream.url}/_control", json=body, timeout=5).raise_for_status()
        with httpx.Client(timeout=10) as client:
            plain = client.post(upstream.track_url, json={"k": "plain"})
            refused = client.post(upstream.track_url, json={"k": "refuse-me"})
            with pytest.raises(httpx.ReadTimeout):
                client.post(upstream.track_url, json={"k": "gone"}, timeout=0.2)
        assert (plain.status_code, refused.status_code) == (202, 422)

        def settled() -> list[dict[str, object]] | None:
            got = upstream.received()
            return got if len(got) == 3 and "answered" in got[2] else None

        records = wait_for(settled, 15, "the hung-up request's record")
        assert [r["status"] for r in records] == [202, 422, 202]
        assert all(r["delay"] == 1.0 for r in records)
        assert [r.get("answered") for r in records] == [None, None, False]
