"""What a backlog costs: RSS of `serve`, GET /healthz and /metrics, `outbox stats`, bytes per
event on disk, at each size of a queued backlog that no upstream drains.

    python -m bench.backlog [--events 100000,1000000]

The events are sent through the Create Event API itself (unique keys, concurrent requests),
the Space has no upstream, so they stay queued; at each size the relay is measured as it
runs. Writes bench/results/backlog.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.ingest import TOKEN, run_wrk
from tests.support import ROOT, RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(url: str, n: int) -> int:
    """Send at least `n` purchases with unique keys (wrk, 32 connections, as long as it takes,
    or 32 threads of httpx where there is no wrk); how many were accepted."""
    if shutil.which("wrk"):
        accepted = 0
        while accepted < n:
            seconds = max(1, min(30, (n - accepted) // 6000))
            run = run_wrk(url, seconds, 32, f"backlog-{time.time_ns()}")
            accepted += int(run["requests"] - run["non2xx"])
        return accepted
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def chunk(count: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(count):
                key = str(uuid.uuid4())
                body = {"event_name": "purchase", "email": "buyer@bench.test", "amount": 19.99,
                        "order_id": key, "idempotency_key": key}
                client.post(url + PATH, json=body, headers=headers).raise_for_status()

    per, rest = divmod(n, 32)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(chunk, [per + (1 if i < rest else 0) for i in range(32)]))
    return n


def timed_get(url: str) -> float:
    start = time.perf_counter()
    httpx.get(url, timeout=60).raise_for_status()
    return round((time.perf_counter() - start) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", default="100000,1000000",
                        help="backlog sizes to measure at, comma-separated, ascending")
    args = parser.parse_args()
    sizes = [int(x) for x in args.events.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="comet-backlog-"))
    config = write_config(workdir, [Space(keys={TOKEN: ["events:write"]},
                                          extra="rate_limit_per_minute = 100000000")])
    rows = []
    with RelayProcess(config) as relay:
        assert relay.proc is not None
        sent = 0
        for size in sizes:
            started = time.monotonic()
            sent += fill(relay.url, size - sent)
            stats_start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "relay.cli", "outbox", "stats", "--config",
                            str(config)], cwd=ROOT, check=True, capture_output=True)
            disk = sum(p.stat().st_size for p in workdir.glob("relay.db*"))
            row = {"events": sent, "rss_mb": round(rss_mb(relay.proc.pid), 1),
                   "healthz_ms": timed_get(relay.url + "/healthz"),
                   "metrics_ms": timed_get(relay.url + "/metrics"),
                   "outbox_stats_s": round(time.perf_counter() - stats_start, 2),
                   "bytes_per_event": round(disk / sent), "fill_s": round(time.monotonic() - started)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "results" / "backlog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
