"""Ingest throughput: the relay's Create Event API against a bare Starlette JSON endpoint.

Both run on the same uvicorn with the options of `comet-relay serve` (bench/server.py) and the
same number of workers, driven by
`wrk` with unique idempotency keys, alternately in one run, so the ratio cancels out the
machine.

    python -m bench.ingest [--duration 10] [--rounds 3] [--connections 64]
                           [--backend sqlite|redis] [--workers N]

`--backend redis` puts the relay's outbox and limiter in a redis-server that the benchmark
starts (tests/redis_server.py) with appendonly yes and appendfsync always, so each 202 still
means the event is on disk. `--workers N` runs both servers with uvicorn --workers N.
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


def run_wrk(url: str, duration: int, connections: int, round_id: str) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
           "-s", str(ROOT / "bench" / "track.lua"), url, "--", round_id, TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"WRK_JSON (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite",
                        help="the relay's database (default: a SQLite file)")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes, for the relay and the baseline alike")
    parser.add_argument("--out", help="default: bench/results/ingest.json for sqlite with one "
                        "worker, else bench/results/ingest-BACKEND-wN.json")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    default_run = (args.backend, args.workers) == ("sqlite", 1)
    name = "ingest" if default_run else f"ingest-{args.backend}-w{args.workers}"
    out = Path(args.out or ROOT / "bench" / "results" / f"{name}.json")

    workdir = Path(tempfile.mkdtemp(prefix="comet-bench-"))
    config = write_config(workdir, [Space(keys={TOKEN: ["events:write"]}, extra="rate_limit_per_minute = 100000000")])
    env = {**os.environ, "BENCH_RELAY_CONFIG": str(config)}
    with contextlib.ExitStack() as stack:
        setup = {"backend": args.backend, "workers": args.workers}
        if args.backend == "redis":
            env["RELAY_DATABASE"], setup["redis"] = stack.enter_context(
                redis_database(workdir / "redis")
            )
        if not default_run:
            print(f"backend {args.backend}, {args.workers} worker(s) each, {os.cpu_count()} CPUs")
            if "redis" in setup:
                print(setup["redis"])
        results = run_rounds(args, env)

    summary = {t: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
               for t, rs in results.items()}
    ratio = summary["relay"]["rps"] / summary["bare"]["rps"]
    report = {"ratio": round(ratio, 3), "median": summary, "rounds": results,
              "duration_s": args.duration, "connections": args.connections, "cpus": os.cpu_count()}
    if not default_run:
        report.update(setup)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\n| target | req/s (median) | p50 ms | p99 ms |\n|---|---|---|---|")
    for t, s in summary.items():
        print(f"| {t} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    print(f"\nrelay / bare = {ratio:.2f}")


def run_rounds(args: argparse.Namespace, env: dict[str, str]) -> dict[str, list[dict[str, float]]]:
    """Warm both servers up, then run the rounds alternately; each target's results."""
    results: dict[str, list[dict[str, float]]] = {"bare": [], "relay": []}
    servers = {target: serve(target, env, args.workers) for target in results}
    try:
        for target, (_, url) in servers.items():  # warm-up, not counted
            run_wrk(url, 2, args.connections, f"warm-{target}-{time.time_ns()}")
        for n in range(args.rounds):
            for target, (_, url) in servers.items():
                r = run_wrk(url, args.duration, args.connections, f"{target}-{n}-{time.time_ns()}")
                if r["non2xx"] or r["socket_errors"]:
                    raise RuntimeError(f"{target} round {n}: {r}")
                results[target].append(r)
                print(f"round {n} {target:5}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(15)
    return results


if __name__ == "__main__":
    main()
