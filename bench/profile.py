"""Where the relay's ingest time goes: CPU per request of each of its threads, or py-spy's
top functions by own time, while wrk drives the Create Event API (the configuration of
`bench.ingest`, one worker, SQLite).

    python -m bench.profile cpu            # µs of CPU per request, per thread, from /proc
    python -m bench.profile spy [--top 12] # py-spy --gil --threads, summed per function

`spy` needs py-spy (`pip install py-spy`) and the right to trace the server (root, or
ptrace_scope 0). Figures are for comparing two versions run back to back on one machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ingest import relay_config, run_wrk, serve

WARM_S, CPU_S, SPY_S = 3, 8, 8


def thread_cpu(pid: int) -> dict[str, float]:
    """Each thread's user plus system CPU seconds so far, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu[tid] = (int(fields[11]) + int(fields[12])) / ticks
    return cpu


def cpu_per_request(pid: int, url: str) -> None:
    before = thread_cpu(pid)
    result = run_wrk(url, CPU_S, 64, "cpu")
    after = thread_cpu(pid)
    # In the order they started: the event loop, then the outbox's sync, writer and
    # checkpoint threads (Linux shows them all as "python").
    print(f"{result['rps']:.0f} req/s; µs of CPU per request by thread, in order of start:")
    for tid, seconds in after.items():
        spent = seconds - before.get(tid, 0.0)
        if spent:
            print(f"  thread {tid}: {spent / result['requests'] * 1e6:6.1f}")


def top_functions(pid: int, url: str, top: int, directory: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = directory / "profile.txt"
    cmd = [spy, "record", "--gil", "--threads", "--format", "raw", "-r", "200",
           "-d", str(SPY_S), "-o", str(raw), "-p", str(pid)]
    recording = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = run_wrk(url, SPY_S + 2, 64, "spy")
    if recording.wait() != 0 or not raw.exists():
        sys.exit("py-spy recorded nothing (is it installed, and may it trace the server?)")
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        own[stack.split(";")[-1].split(" (")[0]] += int(count)
    total = sum(own.values())
    print(f"{result['rps']:.0f} req/s; {total} samples holding the GIL; own time by function:")
    for function, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f} %  {function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("cpu", "spy"))
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="comet-profile-"))
    config = relay_config(directory)
    proc, url = serve("relay", {**os.environ, "BENCH_RELAY_CONFIG": str(config)})
    try:
        run_wrk(url, WARM_S, 64, "warm")
        if args.mode == "cpu":
            cpu_per_request(proc.pid, url)
        else:
            top_functions(proc.pid, url, args.top, directory)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
