"""The comet-relay command: check, keys new, outbox stats, and the embedded default's banner."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay import settings
from relay.auth import api_keys as keys
from relay.cli import main, welcome

ROOT = Path(__file__).resolve().parent.parent
SECRET = "0123456789abcdef-secret"
KEY_HASH = keys.hash_key("crk_test-key-acme")

GOOD = f"""\
[relay]
database = "relay.db"
secret_keys = ["{SECRET}"]

[spaces.acme]
site_key = "pk_acme"
upstream_url = "https://upstream.example/public-api/v1/events/track"
upstream_token_env = "ACME_TOKEN"
[[spaces.acme.api_keys]]
sha256 = "{KEY_HASH}"

[spaces.beta]
active = false
"""

BAD = f"""\
[relay]
databse = "relay.db"
secret_keys = ["{SECRET}"]

[spaces.acme]
rate_limit_per_minute = "fast"
custom_events = ["custom_event_99"]
"""
BAD_NAMES = ("relay.databse", "spaces.acme.rate_limit_per_minute", "spaces.acme.custom_events[0]")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RELAY_CONFIG", "RELAY_DATABASE", "RELAY_SECRET_KEYS", "RELAY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACME_TOKEN", "tok-acme-upstream-secret")


def write(directory: Path, text: str) -> str:
    path = directory / "relay.toml"
    path.write_text(text)
    return str(path)


# --- check -----------------------------------------------------------------------------------


def test_check_summarises_a_valid_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", write(tmp_path, GOOD)])

    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'relay.toml'}: OK" in result.stdout
    assert f"database: {tmp_path / 'relay.db'}" in result.stdout
    assert "acme: active, 1 API key(s), https://upstream.example/" in result.stdout
    assert "beta: inactive, 0 API key(s), no upstream (events stay queued)" in result.stdout
    assert "tok-acme-upstream-secret" not in result.output
    assert SECRET not in result.output


def test_check_names_every_problem_and_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", write(tmp_path, BAD)])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "3 configuration problem(s)" in result.stderr
    for name in BAD_NAMES:
        assert f"  - {name}: " in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_check_reads_relay_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check"], env={"RELAY_CONFIG": write(tmp_path, GOOD)})
    assert result.exit_code == 0, result.output


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "nope.toml: 1 configuration problem(s)" in result.stderr
    assert "cannot read the file: it does not exist" in result.stderr


def test_check_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check", "--config", write(tmp_path, BAD)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for name in BAD_NAMES:
        assert name in done.stderr


def test_serve_with_a_bad_config_exits_2_before_starting(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--config", write(tmp_path, BAD)])
    assert result.exit_code == 2
    for name in BAD_NAMES:
        assert name in result.stderr
    assert "Traceback" not in result.output


# --- keys new --------------------------------------------------------------------------------


def test_keys_new_prints_a_key_and_lines_that_hold_its_hash() -> None:
    result = CliRunner().invoke(main, ["keys", "new", "--space", "acme"])

    assert result.exit_code == 0, result.output
    [key] = re.findall(r"crk_[A-Za-z0-9_-]{43}", result.stdout)
    block = result.stdout[result.stdout.index("[[spaces.acme.api_keys]]") :]
    block = block[: block.index("Only")]
    configured = tomllib.loads(block)["spaces"]["acme"]["api_keys"]
    assert configured == [{"sha256": keys.hash_key(key), "permissions": ["events:write"]}]
    assert "Only the key's SHA-256 is stored" in result.stdout
    assert result.stdout.count(key) == 1


def test_keys_new_gives_a_new_key_each_time() -> None:
    runner = CliRunner()
    one = runner.invoke(main, ["keys", "new", "--space", "acme"]).stdout
    two = runner.invoke(main, ["keys", "new", "--space", "acme"]).stdout
    assert re.findall(r"crk_\S+", one) != re.findall(r"crk_\S+", two)


@pytest.mark.parametrize("args", [["keys", "new"], ["keys", "new", "--space", "a.b"]])
def test_keys_new_needs_a_valid_space_id(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "crk_" not in result.output


# --- outbox stats ----------------------------------------------------------------------------


def _fill_outbox(database: str) -> None:
    from relay.store import NewEvent, open_outbox

    async def fill() -> None:
        outbox = open_outbox(database)
        await outbox.start()
        try:
            now = time.time()
            events = [
                NewEvent("acme", "purchase", f"k{i}", b"{}", (), now + 60, now) for i in range(3)
            ]
            await outbox.enqueue(
                [*events, NewEvent("beta", "lead_generated", "b", b"{}", (), 0, now)], now
            )
        finally:
            await outbox.close()

    asyncio.run(fill())


def test_outbox_stats_counts_per_space(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    _fill_outbox(str(tmp_path / "relay.db"))

    as_json = CliRunner().invoke(main, ["outbox", "stats", "--json", "--config", path])
    as_text = CliRunner().invoke(main, ["outbox", "stats", "--config", path])

    assert as_json.exit_code == 0, as_json.output
    stats = json.loads(as_json.stdout)
    assert (stats["queued"], stats["delivered"], stats["dead"]) == (4, 0, 0)
    assert stats["spaces"]["acme"]["queued"] == 3
    assert stats["spaces"]["beta"]["queued"] == 1
    assert as_text.exit_code == 0, as_text.output
    assert re.search(r"^queued\s+4$", as_text.stdout, re.MULTILINE)
    assert re.search(r"^dead\s+0$", as_text.stdout, re.MULTILINE)
    assert "  acme: queued 3" in as_text.stdout


def test_outbox_stats_does_not_create_a_missing_database(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(main, ["outbox", "stats", "--json", "--config", path])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] == 0
    assert "no outbox at" in result.stderr
    assert not (tmp_path / "relay.db").exists()


def test_outbox_stats_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["outbox", "stats", "--config", write(tmp_path, BAD)])
    assert result.exit_code == 2
    assert "relay.databse" in result.stderr


# --- the embedded default's banner -----------------------------------------------------------


def test_welcome_on_first_start_has_the_key_and_a_curl(tmp_path: Path) -> None:
    loaded, api_key = settings.embedded_default(str(tmp_path), {}, "0.0.0.0", 8080)
    assert api_key is not None

    text = welcome(loaded, api_key, "0.0.0.0", 8080)

    assert api_key in text
    assert str(loaded.spaces["demo"].site_key) in text
    assert "curl -i -X POST http://127.0.0.1:8080/public-api/v1/events/track" in text
    assert f"Authorization: Bearer {api_key}" in text
    assert loaded.secret_keys[0] not in text


def test_welcome_later_has_no_key(tmp_path: Path) -> None:
    settings.embedded_default(str(tmp_path), {}, "::", 8080)
    loaded, api_key = settings.embedded_default(str(tmp_path), {}, "::", 8080)

    text = welcome(loaded, api_key, "::", 8080)

    assert api_key is None
    assert "crk_" not in text
    assert "comet-relay keys new --space demo" in text
    assert str(loaded.spaces["demo"].site_key) in text


def test_serve_warns_when_every_peer_is_a_trusted_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(options))
    config = tmp_path / "relay.toml"
    for proxies, warned in (('["*"]', True), ('["10.0.0.1"]', False)):
        config.write_text(
            f'[relay]\ndatabase = "relay.db"\nsecret_keys = ["{"s" * 32}"]\n'
            f"trusted_proxies = {proxies}\n[spaces.acme]\n"
        )
        result = CliRunner().invoke(main, ["serve", "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert ("any client can choose its own IP" in result.output) is warned
    assert started[-1]["http"] == "relay.server.head:BoundedHeadProtocol"
    assert started[-1]["forwarded_allow_ips"] == "10.0.0.1"
