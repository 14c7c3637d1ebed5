"""What a backlog costs: RSS of `serve`, GET /healthz and /metrics, `outbox stats`, bytes per
event on disk, at each size of a queued backlog that no upstream drains; then what a restart
costs, and what is delivered first after it.

    python -m bench.backlog [--events 100000,1000000] [--event purchase|view_content]

The events (purchases, or page views) are sent through the Create Event API itself (unique
keys, concurrent requests), the Space has no upstream, so they stay queued; at each size the
relay is measured as it runs. Then one new purchase is accepted, the relay is stopped and
started again with an upstream (tests/fake_upstream.py, 600 a minute): its start-up time, RSS
and /metrics, and the first event the upstream receives (with a backlog of page views, the new
purchase: conversions go first; with one of purchases, the oldest, in order). Writes
bench/results/backlog.json.
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
from tests.fake_upstream import events
from tests.support import ROOT, RelayProcess, Space, UpstreamProcess, wait_for, write_config

PATH = "/public-api/v1/events/track"
UPSTREAM_TOKEN = {"BENCH_UPSTREAM_TOKEN": "bench-upstream-token"}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(url: str, n: int, event: str) -> int:
    """Send at least `n` events (`purchase` or `view_content`) with unique keys (wrk, 32
    connections, as long as it takes, or 32 threads of httpx where there is no wrk); how many
    were accepted."""
    if shutil.which("wrk"):
        accepted = 0
        while accepted < n:
            seconds = max(1, min(30, (n - accepted) // 6000))
            run = run_wrk(url, seconds, 32, f"backlog-{time.time_ns()}", event=event)
            if run["requests"] == run["non2xx"]:
                raise RuntimeError(f"the relay refused every {event} of a wrk run")
            accepted += int(run["requests"] - run["non2xx"])
        return accepted

    def chunk(count: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(count):
                send(client, url, event, str(uuid.uuid4()))

    per, rest = divmod(n, 32)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(chunk, [per + (1 if i < rest else 0) for i in range(32)]))
    return n


def send(client: httpx.Client, url: str, event: str, key: str) -> None:
    body: dict[str, object] = {"event_name": event, "idempotency_key": key,
                               "email": "visitor@bench.test", "url": f"https://shop.example/{key}"}
    if event == "purchase":
        body.update(amount=19.99, order_id=key)
    response = client.post(url + PATH, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    response.raise_for_status()


def timed_get(url: str) -> float:
    start = time.perf_counter()
    httpx.get(url, timeout=60).raise_for_status()
    return round((time.perf_counter() - start) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", default="100000,1000000",
                        help="backlog sizes to measure at, comma-separated, ascending")
    parser.add_argument("--event", choices=["purchase", "view_content"], default="purchase",
                        help="what the backlog is made of")
    args = parser.parse_args()
    sizes = [int(x) for x in args.events.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="comet-backlog-"))
    config = space_config(workdir, "")
    rows = []
    new_purchase = f"new-purchase-{uuid.uuid4()}"
    with RelayProcess(config) as relay:
        assert relay.proc is not None
        sent = 0
        for size in sizes:
            started = time.monotonic()
            sent += fill(relay.url, size - sent, args.event)
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
        with httpx.Client(timeout=30) as client:  # accepted last, before the stop
            send(client, relay.url, "purchase", new_purchase)
    restart = restarted(workdir, new_purchase)
    print(json.dumps(restart), flush=True)
    out = ROOT / "bench" / "results" / "backlog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"event": args.event, "rows": rows, "restart": restart,
                               "load": os.getloadavg()}, indent=2))


def space_config(workdir: Path, upstream: str) -> Path:
    return write_config(workdir, [Space(keys={TOKEN: ["events:write"]},
                                        extra="rate_limit_per_minute = 100000000\n" + upstream)])


def restarted(workdir: Path, new_purchase: str) -> dict[str, object]:
    """Start the relay again on the same file, now with an upstream: how long it took to
    answer /healthz, its RSS and /metrics then, and what the upstream received first."""
    with UpstreamProcess(workdir) as upstream:
        config = space_config(workdir, (f'upstream_url = "{upstream.track_url}"\n'
                                        'upstream_token_env = "BENCH_UPSTREAM_TOKEN"\n'
                                        "upstream_rate_per_minute = 600\n"))
        relay = RelayProcess(config, env=UPSTREAM_TOKEN)
        began = time.monotonic()
        relay.start(timeout=300)
        try:
            assert relay.proc is not None
            ready_s = time.monotonic() - began
            first = wait_for(lambda: events(upstream.received()), 300, "a first delivery")[0]
            first_s = time.monotonic() - began
            timed_get(relay.url + "/metrics")  # the first scrape reads the counts
            return {"ready_s": round(ready_s, 2), "first_delivery_s": round(first_s, 2),
                    "first_delivery": first["event_name"],
                    "first_is_the_new_purchase": first["idempotency_key"] == new_purchase,
                    "rss_mb": round(rss_mb(relay.proc.pid), 1),
                    "metrics_ms": timed_get(relay.url + "/metrics"),
                    "healthz_ms": timed_get(relay.url + "/healthz")}
        finally:
            relay.stop()


if __name__ == "__main__":
    main()
