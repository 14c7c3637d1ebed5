"""The master of `serve --workers N` (relay/cli/workers.py) with stand-in processes: one that
runs until its SIGTERM, and one that dies at start-up, as a worker does when its app cannot
start. Real forks, real signals; the master runs in a process of its own (it needs the main
thread for its signal handlers), its log read from a file.

The project's CI once saw `serve --workers 2` stop with status 1 after a clean SIGTERM: a
worker had died at start-up, and the stop came while the master waited to restart it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, wait_for

MASTER = """
import logging, os, signal, sys, time
from relay.cli.workers import Master

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

master = os.getpid()

def steady():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as the real roles' _child does
    while os.getppid() == master:  # and gone with its master, should a failed test kill it
        time.sleep(0.05)

def failing_to_start():
    os._exit(3)  # uvicorn's status when the app's start-up fails

roles = {"steady": steady, "failing": failing_to_start}
sys.exit(Master(roles, restart_pause=float(sys.argv[1])).run())
"""


def start_master(directory: Path, restart_pause: float) -> tuple[subprocess.Popen[bytes], Path]:
    log = directory / "master.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", MASTER, str(restart_pause)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, log


def finished(proc: subprocess.Popen[bytes]) -> int | None:
    code = proc.poll()
    return None if code is None else code + 1000  # truthy for wait_for, even for status 0


def test_a_stop_while_a_process_waits_for_its_restart_is_clean_and_at_once(
    tmp_path: Path,
) -> None:
    # A pause longer than the test waits: the SIGTERM surely comes during it.
    proc, log = start_master(tmp_path, restart_pause=600)
    try:
        wait_for(lambda: "failing (pid" in log.read_text() and "exited with 3" in log.read_text(),
                 20, "the failing process's death")
        steady = re.search(r"started steady \(pid (\d+)\)", log.read_text())
        assert steady is not None
        proc.send_signal(signal.SIGTERM)
        status = wait_for(lambda: finished(proc), 20, "the master to stop") - 1000
        text = log.read_text()
        assert status == 0, text
        assert f"steady (pid {steady[1]}) stopped cleanly" in text
        assert "failing is not restarted: stopping" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_process_that_keeps_failing_to_start_stops_the_master_with_status_1(
    tmp_path: Path,
) -> None:
    proc, log = start_master(tmp_path, restart_pause=0.05)
    try:
        status = wait_for(lambda: finished(proc), 30, "the master to give up") - 1000
        text = log.read_text()
        assert status == 1, text
        assert text.count("started failing") == 3
        assert "it keeps failing to start; stopping" in text
        assert re.search(r"steady \(pid \d+\) stopped cleanly", text)  # no orphan left behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
