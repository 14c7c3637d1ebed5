"""`serve --workers N`: a small master that binds the socket once and runs the processes.

    master ──fork──> worker 1 .. N   (uvicorn on the shared socket, the app without forwarder)
           └─fork──> forwarder       (one for the whole file or Redis, when a Space has an upstream)

The kernel spreads the connections over the workers that accept on the one socket. Each worker
builds its own app (and its own outbox writer: group commit per worker) from the same
`Settings`; with `workers > 1` the wiring gives them the rate limiter shared through the
SQLite file (or the Redis), so a limit holds across workers. One forwarder delivers for all of
them; its pace is in the file or the Redis anyway, so another one would only share it.

The master does nothing else: it restarts a process that died (after a pause when it died at
start-up; it gives up, with status 1, when one dies at start-up three times in a row), and on
SIGTERM or SIGINT sends SIGTERM to each, so every worker finishes its requests and drains its
pending group commit, then waits for them. A process whose master died (SIGKILL) stops
itself the same way, so it never keeps the port from a new master. Processes are forked, not
spawned: the master has no thread and no event loop when it forks, and the workers share the
imported code's memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from typing import Any

from relay.settings import Settings

log = logging.getLogger("relay.workers")

_FORK = multiprocessing.get_context("fork")
ORPHAN_CHECK_SECONDS = 0.5  # how often a child looks for its master
QUICK_DEATH_SECONDS = 2.0  # a process that dies this soon after its start is failing to start
QUICK_DEATHS = 3  # so many quick deaths in a row: it cannot start (its log says why); give up
STOP_TIMEOUT_SECONDS = 45.0  # uvicorn's 30 s for open requests, then the drains


def run_workers(settings: Settings, options: dict[str, Any], forward: bool) -> int:
    """Serve with `settings.workers` processes until SIGTERM or SIGINT; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    sock = _bind(options["host"], options["port"])
    metrics_dir = None
    if settings.metrics_multiproc_dir is None:  # so that any worker's /metrics counts them all
        metrics_dir = tempfile.mkdtemp(prefix="comet-relay-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by prometheus_client
        settings = replace(settings, metrics_multiproc_dir=metrics_dir)
    master = os.getpid()
    roles: dict[str, Callable[[], None]] = {
        f"worker {n}": _worker_target(settings, options, sock, master)
        for n in range(1, settings.workers + 1)
    }
    if forward and any(s.upstream_url for s in settings.spaces.values()):
        roles["forwarder"] = _forwarder_target(settings, master)
    try:
        return Master(roles).run()
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class Master:
    """Runs one process per role, restarts the ones that die, stops them all on a signal.

    A process that dies soon after its start is restarted after `restart_pause` seconds (it
    is failing to start; its log says why), one that dies later at once; the pause is a
    deadline of the loop, not a sleep, so a signal during it stops the master at once.
    """

    def __init__(self, roles: dict[str, Callable[[], None]],
                 restart_pause: float = QUICK_DEATH_SECONDS) -> None:
        self.roles = roles
        self.restart_pause = restart_pause
        self.procs: dict[str, Any] = {}
        self.started: dict[str, float] = {}
        self.restart_at: dict[str, float] = {}  # the roles whose process died, waiting
        self.quick_deaths: dict[str, int] = {}
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for role in self.roles:
            self._start(role)
        while not self.stopping:
            running = [p.sentinel for r, p in self.procs.items() if r not in self.restart_at]
            wait(running, timeout=self._next_wait())
            for role, proc in list(self.procs.items()):
                if self.stopping:
                    break
                if role not in self.restart_at and proc.exitcode is not None:
                    self._died(role, proc)
                elif self.restart_at.get(role, float("inf")) <= time.monotonic():
                    del self.restart_at[role]
                    self._start(role)
        return self._stop_all()

    def _next_wait(self) -> float:
        if not self.restart_at:
            return ORPHAN_CHECK_SECONDS
        soonest = min(self.restart_at.values()) - time.monotonic()
        return max(0.0, min(ORPHAN_CHECK_SECONDS, soonest))

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self, role: str) -> None:
        proc = _FORK.Process(target=self.roles[role], name=f"comet-relay {role}")
        proc.start()
        self.procs[role], self.started[role] = proc, time.monotonic()
        log.info("started %s (pid %s)", role, proc.pid)

    def _died(self, role: str, proc: Any) -> None:
        quick = time.monotonic() - self.started[role] < QUICK_DEATH_SECONDS
        self.quick_deaths[role] = self.quick_deaths.get(role, 0) + 1 if quick else 0
        if self.quick_deaths[role] >= QUICK_DEATHS:
            log.error("%s (pid %s) exited with %s, at start-up %d times in a row: it keeps"
                      " failing to start; stopping", role, proc.pid, proc.exitcode, QUICK_DEATHS)
            self.stopping = self.failed = True
            return
        pause = self.restart_pause if quick else 0.0
        log.warning("%s (pid %s) exited with %s; starting another in %g s", role, proc.pid,
                    proc.exitcode, pause)
        self.restart_at[role] = time.monotonic() + pause

    def _stop_all(self) -> int:
        """SIGTERM to every running process, and wait for them. The status is 1 when one of
        them did not stop cleanly, or a role kept failing; a process that had died before the
        stop was reported then (and restarted, or waiting for it), so it is not the stop's."""
        running = {r: p for r, p in self.procs.items() if r not in self.restart_at}
        log.info("stopping %d process(es): each finishes its requests and its commits",
                 len(running))
        for role, proc in list(running.items()):
            if proc.exitcode is not None:  # died before the stop; not restarted now
                log.warning("%s (pid %s) exited with %s before the stop", role, proc.pid,
                            proc.exitcode)
                del running[role]
            else:
                proc.terminate()  # SIGTERM: uvicorn's and the forwarder's graceful shutdown
        for role in self.restart_at:
            log.info("%s is not restarted: stopping", role)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        status = 1 if self.failed else 0
        for role, proc in running.items():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.error("%s (pid %s) did not stop in time; killing it", role, proc.pid)
                proc.kill()
                proc.join(5)
            # uvicorn re-raises the SIGTERM once it has shut down cleanly: -15 is a clean stop
            if proc.exitcode not in (0, -signal.SIGTERM):  # killed, or failed to drain
                log.error("%s (pid %s) stopped with %s", role, proc.pid, proc.exitcode)
                status = 1
            else:
                log.info("%s (pid %s) stopped cleanly", role, proc.pid)
        return status


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_target(
    settings: Settings, options: dict[str, Any], sock: socket.socket, master: int
) -> Callable[[], None]:
    def serve_on_socket() -> None:
        _child(master)
        import uvicorn

        from relay.app import create_app

        app = create_app(settings, forward=False)
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])

    return serve_on_socket


def _forwarder_target(settings: Settings, master: int) -> Callable[[], None]:
    def forward() -> None:
        _child(master)
        import asyncio

        from relay.cli.forward import run_forwarder

        asyncio.run(run_forwarder(settings, 10.0))

    return forward


def _child(master: int) -> None:
    """What every child does first: default signals (the master's handlers are its own), and
    a watch that stops the process gracefully if its master dies."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        while os.getppid() == master:
            time.sleep(ORPHAN_CHECK_SECONDS)
        log.warning("the master (pid %s) is gone; stopping", master)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="master-watch", daemon=True).start()
