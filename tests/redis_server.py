"""A real `redis-server` for the tests: a child process on a free loopback port in a temp dir.

The server writes an append-only file with `appendfsync always`, so a test may SIGKILL it and
start it again on the same directory to see what an acknowledged write survives.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
MISSING = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


class RedisServer:
    """One `redis-server` process; `url` names it as relay.toml's `database` would."""

    def __init__(self, directory: Path, *, appendfsync: str = "always") -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server (again, on the same directory and port) and wait until it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(REDIS_SERVER),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.directory),
            "--logfile", str(self.log),
            "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.log}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        """True when the server answers PING (and has finished loading its data)."""
        return self.command("PING") == b"+PONG\r\n"

    def command(self, *args: str) -> bytes:
        """Send one command over a fresh connection; the raw reply, or b"" if none came."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as conn:
                conn.sendall(request.encode())
                return conn.recv(65536)
        except OSError:
            return b""

    def flush(self) -> None:
        """Delete every key, so each test starts from an empty store."""
        if self.command("FLUSHALL") != b"+OK\r\n":
            raise RuntimeError(f"FLUSHALL failed on {self.url}")

    def kill(self) -> None:
        """SIGKILL: no shutdown and no final write, as a crash would leave it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
