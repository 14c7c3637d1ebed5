"""Ingest throughput: the relay's Create Event API against a bare Starlette JSON endpoint.

Both run on the same uvicorn with the options of `comet-relay serve` (bench/server.py) and the
same number of workers, driven by
`wrk` with unique idempotency keys, alternately in one run, so the ratio cancels out the
machine.

    python -m bench.ingest [--duration 10] [--rounds 3] [--connections 64]
                           [--backend sqlite|redis] [--workers N] [--browser]

`--backend redis` puts the relay's outbox and limiter in a redis-server that the benchmark
starts (tests/redis_server.py) with appendonly yes and appendfsync always, so each 202 still
means the event is on disk. `--workers N` runs, in one run, the relay with one worker, the
relay with N (under its own master, as `serve --workers N`) and the bare endpoint with N
(uvicorn --workers N); the ratio is relay-wN / bare-wN. `--browser` measures `POST /e` with
batches of 1, 5 and 50 events against the bare endpoint's /e, in events per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT, Space, answers, free_port, wait_for, write_config

TOKEN = "bench-key-0123456789"
SITE_KEY = "pk_acme"
# label -> (server target, workers, events per browser batch or 0 for the Create Event API)
Targets = dict[str, tuple[str, int, int]]


def serve(
    target: str, env: dict[str, str], workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the relay or the bare baseline on uvicorn; the process and its URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.server", target, "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(url + "/healthz"), 20, f"{target} server")
    return proc, url


def relay_config(directory: Path) -> Path:
    """The relay's relay.toml for the ingest benchmarks: one Space with the benchmark's key,
    limits far above what wrk can send."""
    return write_config(
        directory, [Space(keys={TOKEN: ["events:write"]}, extra="rate_limit_per_minute = 100000000")],
        relay_extra="browser_rate_limit_per_minute = 100000000",
    )


def run_wrk(
    url: str, duration: int, connections: int, round_id: str, batch: int = 0,
    event: str = "purchase",
) -> dict[str, float]:
    """One wrk run: Create Event requests (purchases, or page views), or browser batches of
    `batch` events to /e."""
    script, extra = (("track.lua", [TOKEN, event]) if batch == 0
                     else ("collect.lua", [SITE_KEY, str(batch)]))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
           "-s", str(ROOT / "bench" / script), url, "--", round_id, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"WRK_JSON (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    rps = raw["requests"] / (raw["duration_us"] / 1e6)
    return {
        "rps": rps,
        "events_per_s": rps * max(batch, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "non2xx": raw["non2xx"],
        "socket_errors": raw["socket_errors"],
    }


@contextlib.contextmanager
def redis_database(directory: Path) -> Iterator[tuple[str, str]]:
    """A redis-server for the relay (appendonly yes, appendfsync always): its URL and a line
    saying how it runs, for the output."""
    from tests.redis_server import RedisServer  # only this backend needs redis-server

    with RedisServer(directory, appendfsync="always") as server:
        info = server.command("INFO", "server").decode(errors="replace")
        version = re.search(r"redis_version:(\S+)", info)
        yield server.url, (
            f"redis-server {version.group(1) if version else '?'} on loopback, "
            "appendonly yes, appendfsync always (each 202 is on disk)"
        )


def targets(args: argparse.Namespace) -> list[tuple[str, Targets]]:
    """The comparisons of this run: (name, the servers compared, the first one the baseline)."""
    n = args.workers
    if args.browser:
        return [(f"browser batch {b}", {f"bare /e x{b}": ("bare", n, b),
                                        f"relay /e x{b}": ("relay", n, b)}) for b in (1, 5, 50)]
    if n > 1:
        return [(f"{n} workers", {f"bare-w{n}": ("bare", n, 0), "relay-w1": ("relay", 1, 0),
                                  f"relay-w{n}": ("relay", n, 0)})]
    return [("ingest", {"bare": ("bare", 1, 0), "relay": ("relay", 1, 0)})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite",
                        help="the relay's database (default: a SQLite file)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes: relay-wN and bare-wN beside relay-w1")
    parser.add_argument("--browser", action="store_true",
                        help="POST /e with batches of 1, 5 and 50 events")
    parser.add_argument("--out", help="default: bench/results/ingest.json for sqlite with one "
                        "worker, else bench/results/ingest-BACKEND-wN[-browser].json")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    default_run = (args.backend, args.workers, args.browser) == ("sqlite", 1, False)
    name = "ingest" if default_run else f"ingest-{args.backend}-w{args.workers}"
    name += "-browser" if args.browser else ""
    out = Path(args.out or ROOT / "bench" / "results" / f"{name}.json")

    workdir = Path(tempfile.mkdtemp(prefix="comet-bench-"))
    config = relay_config(workdir)
    env = {**os.environ, "BENCH_RELAY_CONFIG": str(config)}
    report: dict[str, object] = {"duration_s": args.duration, "connections": args.connections,
                                 "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    with contextlib.ExitStack() as stack:
        setup = {"backend": args.backend, "workers": args.workers, "browser": args.browser}
        if args.backend == "redis":
            env["RELAY_DATABASE"], setup["redis"] = stack.enter_context(
                redis_database(workdir / "redis")
            )
        if not default_run:
            print(f"backend {args.backend}, {args.workers} worker(s), {os.cpu_count()} CPUs "
                  "(wrk shares them)")
            if "redis" in setup:
                print(setup["redis"])
            report.update(setup)
        for title, compared in targets(args):
            print(f"\n## {title}")
            results = run_rounds(args, env, compared)
            report[title] = summarise(results)
    report["load_after"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nload average before {report['load_before']}, after {report['load_after']}")


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    """Medians per target, the spread of each ratio to the first (the baseline), printed."""
    keys = ("rps", "events_per_s", "p50_ms", "p99_ms")
    median = {t: {k: statistics.median(r[k] for r in rs) for k in keys} for t, rs in results.items()}
    base = next(iter(results))
    ratios = {t: [r["events_per_s"] / b["events_per_s"] for r, b in zip(rs, results[base])]
              for t, rs in results.items() if t != base}
    print("\n| target | req/s (median) | events/s | p50 ms | p99 ms | / baseline (rounds) |")
    print("|---|---|---|---|---|---|")
    for t, m in median.items():
        spread = ", ".join(f"{x:.2f}" for x in ratios.get(t, []))
        shown = f"{statistics.median(ratios[t]):.2f} ({spread})" if t in ratios else "baseline"
        print(f"| {t} | {m['rps']:.0f} | {m['events_per_s']:.0f} | {m['p50_ms']:.2f} "
              f"| {m['p99_ms']:.2f} | {shown} |")
    return {"median": median, "ratios": ratios, "rounds": results}


def run_rounds(
    args: argparse.Namespace, env: dict[str, str], compared: Targets
) -> dict[str, list[dict[str, float]]]:
    """Warm the servers up, then run the rounds alternately; each target's results."""
    results: dict[str, list[dict[str, float]]] = {label: [] for label in compared}
    servers = {label: serve(target, env, workers) for label, (target, workers, _) in compared.items()}
    try:
        for label, (_, url) in servers.items():  # warm-up, not counted
            run_wrk(url, 2, args.connections, f"warm-{label}-{time.time_ns()}", compared[label][2])
        for n in range(args.rounds):
            for label, (_, url) in servers.items():
                round_id = f"{label.replace(' ', '')}-{n}-{time.time_ns()}"
                r = run_wrk(url, args.duration, args.connections, round_id, compared[label][2])
                if r["non2xx"] or r["socket_errors"]:
                    raise RuntimeError(f"{label} round {n}: {r}")
                results[label].append(r)
                print(f"round {n} {label:14}: {r['rps']:8.0f} req/s {r['events_per_s']:8.0f} "
                      f"events/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    return results


if __name__ == "__main__":
    main()
