"""Security: the outbox file is its owner's alone, and no password of a URL is printed or
logged (`comet-relay check`, `forward`, `outbox tail`).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from relay.cli import main
from relay.observe.shown import redacted
from tests.redis_server import RedisServer
from tests.support import ROOT, RelayProcess, Space, wait_for, write_config

PATH = "/public-api/v1/events/track"
KEY = {"Authorization": "Bearer key-acme-write"}
SECRET = "s3cret-pass-word"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_outbox_files_are_private_on_a_configured_path(tmp_path: Path) -> None:
    data = tmp_path / "var" / "lib"
    config = write_config(tmp_path, [Space()], relay_extra="")
    text = config.read_text().replace('database = "relay.db"', f'database = "{data}/outbox.db"')
    config.write_text(text)
    old = os.umask(0o022)  # the usual umask: without care, files come out 0644
    try:
        with RelayProcess(config) as relay:
            r = httpx.post(f"{relay.url}{PATH}", json={"event_name": "lead_generated",
                                                       "email": "a@shop.example"}, headers=KEY)
            assert r.status_code == 202
            files = [data / name for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm")]
            assert all(f.exists() for f in files)
            assert [oct(mode(f)) for f in files] == [oct(0o600)] * 3
    finally:
        os.umask(old)


def test_an_existing_world_readable_outbox_is_made_private(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space()])
    db = tmp_path / "relay.db"
    with RelayProcess(config):
        pass
    for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
        if (tmp_path / name).exists():
            os.chmod(tmp_path / name, 0o644)
    with RelayProcess(config):
        assert mode(db) == 0o600


def test_check_prints_no_password_of_a_url(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space(extra=(
        f'upstream_url = "https://relay:{SECRET}@upstream.example/track"\n'
        'upstream_token_env = "ACME_TOKEN"'
    ))])
    env = {"ACME_TOKEN": "tok", "RELAY_DATABASE": f"redis://:{SECRET}@127.0.0.1:6399/0"}
    result = CliRunner().invoke(main, ["check", "--config", str(config)], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "redis://:***@127.0.0.1:6399/0" in result.output
    assert "https://relay:***@upstream.example/track" in result.output


def test_forward_logs_no_redis_password(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.command("ACL", "SETUSER", "relay", "on", f">{SECRET}", "~*", "&*", "+@all")
    url = redis_server.url.replace("redis://", f"redis://relay:{SECRET}@")
    config = write_config(tmp_path, [Space()])
    log = tmp_path / "forward.log"
    env = {**os.environ, "RELAY_DATABASE": url}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "forward", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    try:
        wait_for(lambda: "forwarding from" in log.read_text(), 20, "the forward process")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    text = log.read_text()
    assert SECRET not in text
    assert "redis://relay:***@127.0.0.1" in text


def test_redacted_keeps_what_has_no_password() -> None:
    assert redacted("/var/lib/comet/relay.db") == "/var/lib/comet/relay.db"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted("rediss://u:p@h:1/2?x=1") == "rediss://u:***@h:1/2?x=1"
