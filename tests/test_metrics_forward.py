"""The figures of `comet-relay forward` processes: on their own /metrics port, and through a
PROMETHEUS_MULTIPROC_DIR shared with `serve` on one machine; and their event log lines.

Real processes throughout: forwarders started as `python -m relay.cli forward`, a relay as
`python -m relay.cli serve`, the fake upstream from tests/fake_upstream.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from relay.cli import main
from tests import test_forwarder
from tests.support import ROOT, RelayProcess, UpstreamProcess, free_port, wait_for, write_config
from tests.test_forward_process import ForwardProcess, config_for, enqueue
from tests.test_forwarder import TOKEN_ENV
from tests.test_metrics import KEY, PATH, Samples, samples, space_depth, value

upstream = test_forwarder.upstream  # the fixture: a fake upstream process for each test


class MeteredForward(ForwardProcess):
    """`comet-relay forward` with more options and environment than ForwardProcess's."""

    def __init__(self, config: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        super().__init__(config, name)
        self.args = args
        self.env = env

    def spawn(self) -> MeteredForward:
        cmd = [sys.executable, "-m", "relay.cli", "forward", "--config", str(self.config)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*cmd, *self.args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, **TOKEN_ENV, **self.env},
            )
        return self


def scrape(url: str) -> Samples | None:
    try:
        return samples(httpx.get(f"{url}/metrics", timeout=5).text)
    except httpx.HTTPError:
        return None  # not listening yet


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_forward_process_serves_its_deliveries_on_its_own_metrics_port(
    backend: str, tmp_path: Path, upstream: UpstreamProcess, request: pytest.FixtureRequest
) -> None:
    upstream.control(script=[{"status": 503, "message": "busy"}], default={"status": 202})
    config = config_for(tmp_path, upstream)
    config.write_text(config.read_text().replace("[relay]\n", '[relay]\nlog_format = "json"\n'))
    database = str(tmp_path / "relay.db")
    if backend == "redis":
        database = request.getfixturevalue("redis_url")
        config.write_text(config.read_text().replace('"relay.db"', f'"{database}"'))
    keys = ["m-0", "m-1", "m-2"]
    enqueue(database, keys)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    forward = MeteredForward(config, backend, ["--metrics-port", str(port)], {})
    try:
        forward.start()

        def delivered() -> Samples | None:
            seen = scrape(url)
            if seen is None or value(seen, "comet_deliveries_total", space="acme", status="202") < 3:
                return None
            # The outbox's counts and its queue figures are two reads: a mark may land between.
            settled = value(seen, "comet_outbox_events", space="acme", state="delivered") == 3
            return seen if settled and space_depth(seen) == 0 else None

        seen = wait_for(delivered, 30, f"three deliveries on {url}/metrics")
        health = httpx.get(f"{url}/healthz", timeout=5)
        code, _ = forward.terminate()
    finally:
        forward.kill()
    assert code == 0, forward.text()
    assert value(seen, "comet_deliveries_total", space="acme", status="202") == 3
    assert value(seen, "comet_deliveries_total", space="acme", status="503") == 1
    assert value(seen, "comet_retries_total", space="acme") == 1
    assert value(seen, "comet_upstream_duration_seconds_count", space="acme") == 4
    # the outbox gauges, read by the forward process itself
    assert value(seen, "comet_outbox_events", space="acme", state="delivered") == 3
    for priority in ("api_conversion", "browser_conversion", "page_view"):
        assert ("comet_queue_depth", frozenset({"space": "acme", "priority": priority}.items())) in seen
    assert health.status_code == 200
    # the same /healthz as serve's: the queue, and the upstream of each Space it forwards
    body = health.json()
    assert (body["status"], body["queued"], body["dead"]) == ("ok", 0, 0)
    assert body["spaces"] == {"acme": {"upstream": "answering"}}
    assert f"metrics on http://127.0.0.1:{port}/metrics" in forward.text()
    # the event log as serve writes it: JSON lines here, one per delivered or retrying event
    lines = [json.loads(line) for line in forward.text().splitlines() if line.startswith("{")]
    steps = [(e["outcome"], e["event_id"]) for e in lines if e["logger"] == "relay.events"]
    assert sorted(k for outcome, k in steps if outcome == "delivered") == keys
    assert [outcome for outcome, _ in steps].count("retrying") == 1
    with pytest.raises(httpx.ConnectError):  # stopped with the process
        httpx.get(f"{url}/healthz", timeout=2)


def test_a_shared_multiproc_dir_puts_the_forward_process_figures_in_serve_metrics(
    tmp_path: Path, upstream: UpstreamProcess
) -> None:
    upstream.control(default={"status": 202})
    config = config_for(tmp_path, upstream)
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    relay = RelayProcess(config, env={**TOKEN_ENV, **env}, args=["--no-forward"])
    forward = MeteredForward(config, "multiproc", [], env)
    try:
        relay.start()
        forward.start()
        with httpx.Client(base_url=relay.url) as c:
            for i in range(3):
                event = {"event_name": "purchase", "email": "a@b.c", "idempotency_key": f"x-{i}"}
                assert c.post(PATH, json=event, headers=KEY).status_code == 202

            def delivered() -> Samples | None:
                seen = samples(c.get("/metrics").text)
                done = value(seen, "comet_deliveries_total", space="acme", status="202") == 3
                return seen if done and space_depth(seen) == 0 else None

            seen = wait_for(delivered, 30, "the forward process's deliveries in serve's /metrics")
        assert forward.proc is not None
        pid = forward.proc.pid
        code, _ = forward.terminate()
    finally:
        forward.kill()
        relay.stop()
    assert code == 0, forward.text()
    # serve counted the events it received; the forward process, in its own files, what
    # became of them; one scrape of serve sums both
    assert value(seen, "comet_events_received_total", space="acme", source="api",
                 outcome="accepted", reason="") == 3
    assert value(seen, "comet_upstream_duration_seconds_count", space="acme") == 3
    files = {p.name for p in directory.iterdir()}
    assert {f"counter_{pid}.db", f"histogram_{pid}.db"} <= files, files
    assert "delivered event x-0" in forward.text()


def test_forward_refuses_a_metrics_port_it_cannot_listen_on(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main, ["forward", "--config", str(config), "--metrics-port", str(port)]
        )
    assert result.exit_code == 2, result.output
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "relay.db").exists()  # refused before it opened anything
