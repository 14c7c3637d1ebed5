"""The runnable examples of docs/examples/ run: each mount example is served by a real uvicorn
process, as its docstring says to run it, and takes events through its mounted path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, RelayProcess, free_port, missing, wait_for, write_config
from tests.test_api_http import stored

EXAMPLES = ROOT / "docs" / "examples"
ORIGIN = "https://acme.example"  # write_config's allowed origin of Space acme
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
HOME = {"mount_starlette": "the shop", "mount_fastapi": '{"shop":"open"}'}


def test_every_example_is_tested_here() -> None:
    assert {p.stem for p in EXAMPLES.glob("*.py")} == set(HOME)


def home(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(params=sorted(HOME))
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, RelayProcess]]:
    """`RELAY_CONFIG=... uvicorn --app-dir docs/examples NAME:app` on a free port: the name,
    the base URL, and a RelayProcess that is never started but knows where relay.db is."""
    name: str = request.param
    if name == "mount_fastapi":
        try:
            import fastapi  # noqa: F401  # in the test extra
        except ImportError:
            missing("docs/examples/mount_fastapi.py needs fastapi (pip install -e '.[test]')")
    config = write_config(tmp_path)
    port = free_port()
    log = tmp_path / "uvicorn.log"
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(EXAMPLES), f"{name}:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]
    env = {"RELAY_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or home(url + "/"), 30, f"{name} on {url}")
        assert proc.poll() is None, log.read_text()
        yield name, url, RelayProcess(config)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # uvicorn stops gracefully on SIGTERM, then ends by that signal (or with 0, by version)
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()  # the relay's lifespan ended too


def test_a_mounted_relay_takes_events_under_its_path(served: tuple[str, str, RelayProcess]) -> None:
    name, url, files = served
    assert httpx.get(url + "/").text == HOME[name]  # the host app is still the host app
    base = url + "/relay"

    api = {"event_name": "purchase", "email": "j@shop.example", "amount": 49, "idempotency_key": f"{name}-1"}
    key = {"Authorization": "Bearer key-acme-write"}
    r = httpx.post(base + "/public-api/v1/events/track", json=api, headers=key)
    assert r.status_code == 202, r.text  # 202 only after the commit: the lifespan started the outbox
    assert r.headers["idempotency-key"] == f"{name}-1"
    assert stored(files, f"{name}-1") == [api]
    assert httpx.post(url + "/public-api/v1/events/track", json=api, headers=key).status_code == 404

    snippet = httpx.get(base + "/comet.js")
    assert snippet.status_code == 200 and "javascript" in snippet.headers["content-type"]
    event = {"event_name": "view_content", "event_id": f"{name}-browser-1", "url": f"{ORIGIN}/"}
    r = httpx.post(
        base + "/e?k=pk_acme",
        content=json.dumps({"e": [event]}),
        headers={"Origin": ORIGIN, "Content-Type": "text/plain", "User-Agent": CHROME},
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert httpx.get(base + "/healthz").json()["queued"] == 2


def test_the_examples_pass_ruff() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(EXAMPLES)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
