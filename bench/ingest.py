"""Ingest throughput: the relay's Create Event API against a bare Starlette JSON endpoint.

Both run on the same uvicorn with the same flags, one worker each, driven by `wrk` with unique
idempotency keys, alternately in one run, so the ratio cancels out the machine.

    python -m bench.ingest [--duration 10] [--rounds 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support import ROOT, Space, free_port, wait_for, write_config

TOKEN = "bench-key-0123456789"
UVICORN = [sys.executable, "-m", "uvicorn", "--no-access-log", "--log-level", "warning"]


def serve(target: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["--factory", "bench.relay_app:make"] if target == "relay" else ["bench.bare_app:app"]
    proc = subprocess.Popen([*UVICORN, "--port", str(port), *args], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 20, f"{target} server")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="comet-bench-"))
    config = write_config(workdir, [Space(keys={TOKEN: ["events:write"]}, extra="rate_limit_per_minute = 100000000")])
    env = {**os.environ, "BENCH_RELAY_CONFIG": str(config)}
    results: dict[str, list[dict[str, float]]] = {"bare": [], "relay": []}
    servers = {target: serve(target, env) for target in results}
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

    summary = {t: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
               for t, rs in results.items()}
    ratio = summary["relay"]["rps"] / summary["bare"]["rps"]
    report = {"ratio": round(ratio, 3), "median": summary, "rounds": results,
              "duration_s": args.duration, "connections": args.connections, "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\n| target | req/s (median) | p50 ms | p99 ms |\n|---|---|---|---|")
    for t, s in summary.items():
        print(f"| {t} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |")
    print(f"\nrelay / bare = {ratio:.2f}")


if __name__ == "__main__":
    main()
