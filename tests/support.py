"""Helpers shared by the tests, the e2e tests and the benchmarks: configs and real processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Self, TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
# In CI every browser, service and tool the tests need is there (.ci/run installs them).
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
T = TypeVar("T")

SECRET = "test-secret-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def missing(what: str) -> NoReturn:
    """What a test needs is not on this machine: a skip on a laptop, a failure in CI, which
    must have everything (the root conftest.py also fails any other skip there)."""
    import pytest  # here: the benchmarks use this module without pytest

    if IN_CI:
        pytest.fail(f"{what}; CI must have it (.ci/run installs it)", pytrace=False)
    pytest.skip(what)


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def answers(url: str) -> bool:
    """Whether GET `url` answers 200 now (False while the server is not up yet)."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Space:
    id: str = "acme"
    keys: Mapping[str, list[str]] = field(
        default_factory=lambda: {"key-acme-write": ["events:write"]}
    )
    extra: str = ""  # more TOML lines for [spaces.ID]
    # How long a conversion waits for its twin: 0 here (the default is a minute), so tests of
    # delivery need not wait; the tests of twins set their own.
    twin_window: float = 0


def write_config(directory: Path, spaces: list[Space] | None = None, relay_extra: str = "") -> Path:
    """A relay.toml in `directory` with the given Spaces; API keys are stored hashed."""
    spaces = spaces if spaces is not None else [Space()]
    lines = [
        "[relay]",
        'database = "relay.db"',
        f'secret_keys = ["{SECRET}"]',
        'trusted_proxies = ["127.0.0.1"]',
        relay_extra,
    ]
    for sp in spaces:
        lines += [
            f"[spaces.{sp.id}]",
            f'site_key = "pk_{sp.id}"',
            f'allowed_origins = ["https://{sp.id}.example"]',
            sp.extra,
        ]
        if "twin_window_seconds" not in sp.extra:
            lines.append(f"twin_window_seconds = {sp.twin_window:g}")
        for key, perms in sp.keys.items():
            perm_list = ", ".join(f'"{p}"' for p in perms)
            lines += [
                f"[[spaces.{sp.id}.api_keys]]",
                f'sha256 = "{sha256(key)}"',
                f"permissions = [{perm_list}]",
            ]
    path = directory / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class RelayProcess:
    """`comet-relay serve` in a child process on a free loopback port."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None, args: list[str] | None = None):
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / f"relay-{self.port}.log"

    def start(self, timeout: float = 20.0) -> RelayProcess:
        cmd = [sys.executable, "-m", "relay.cli", "serve", "--config", str(self.config)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )
        wait_for(self._ready, timeout, f"relay on {self.url} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"relay exited with {self.proc.returncode}: {self.log.read_text()}")
        return answers(f"{self.url}/healthz")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a power cut would leave it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UpstreamProcess:
    """tests/fake_upstream.py in a child process: a Create Event API that fails on command."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.track_url = f"{self.url}/public-api/v1/events/track"
        self.log = directory / f"upstream-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> UpstreamProcess:
        cmd = [sys.executable, "-m", "tests.fake_upstream", "--port", str(self.port)]
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: answers(f"{self.url}/healthz"), 20, "fake upstream")
        return self

    def control(self, script: list[dict[str, object]] | None = None, default: dict[str, object] | None = None) -> None:
        body: dict[str, object] = {}
        if script is not None:
            body["script"] = script
        if default is not None:
            body["default"] = default
        httpx.post(f"{self.url}/_control", json=body, timeout=5).raise_for_status()

    def received(self) -> list[dict[str, object]]:
        return httpx.get(f"{self.url}/_received", timeout=5).json()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def busiest_second(times: Iterable[float]) -> int:
    """The most arrivals in any window [t, t + 1 s)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def attempts(log: Path) -> list[dict[str, Any]]:
    """The upstream attempts a relay settled, read from its event log (`log_format =
    "json"`), in the order it settled them. Each has `event_id`, `outcome` ("delivered",
    "retrying", "paused" or "dead"), `upstream_status`, `next_attempt_at`, and the relay's
    own record of its start: `started_at`, when the forwarder let the request go, and
    `slot`, the start the pacer reserved for it."""
    found = []
    for line in log.read_text("utf-8", "replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:  # a line still being written
            continue
        if record.get("logger") == "relay.events" and "started_at" in record:
            found.append(record)
    return found


def most_within_a_second(times: Iterable[float]) -> int:
    """The most of `times` within any second, counted as the forwarder counts its own starts:
    each one with those less than a second before it."""
    ordered = sorted(times)
    return max((sum(1 for s in ordered if 0.0 <= t - s < 1.0) for t in ordered), default=0)
